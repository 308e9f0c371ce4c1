"""One exception type for bad data, so the CLI and the runners can print it as a one-line message."""


class DatasetError(Exception):
    """A dataset file or folder is unusable; the message names the file and what is wrong with it."""
