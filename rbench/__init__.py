"""rbench: honest, quick ResNet benchmarks on any GPU or CPU (the harness; the kernels are `rbench_kernels`)."""

__version__ = "0.1.0"
