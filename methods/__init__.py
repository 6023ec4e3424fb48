"""Long-tailed methods, one module each, registered through the `ltbench.methods` entry points."""
