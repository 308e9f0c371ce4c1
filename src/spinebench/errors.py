"""The mistakes a user can make, one class per kind.

Only these print as one line (exit 2) at the entry points; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class SpinebenchError(Exception):
    """Something the user asked for cannot be done; the message names what and how to fix it."""


class ConfigError(SpinebenchError):
    """A config key or value the user gave is unusable (unknown key, wrong type, impossible combination)."""


class DataError(SpinebenchError):
    """A dataset file or folder is unusable: the message names the file and what is wrong with it."""


class WeightsError(SpinebenchError):
    """A pretrained or trained weights file is missing, unreadable or does not fit the model."""


class RunStateError(SpinebenchError):
    """A run folder cannot do what was asked: unfinished, trained under other settings, not a run."""
