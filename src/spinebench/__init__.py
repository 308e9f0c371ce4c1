"""spinebench: reproducible benchmarks for spinal-cord ultrasound (Kumar et al., Sci Rep 2025)."""

__version__ = "0.1.0"
