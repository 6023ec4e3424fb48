"""ltbench: a reproducibility benchmark harness for long-tailed image classification."""

__version__ = "0.2.0"
