"""Shared test set-up. Without a GPU, Triton kernels run under the interpreter: the variable must be
set before triton is first imported, hence here, at the top of the first conftest pytest loads."""

import os

# The interpreter runs each tile's matmul in NumPy; OpenBLAS threads spinning against each other on a
# small, shared machine cost up to 8x. Set before torch (and with it NumPy) is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if not _has_gpu():
    os.environ.setdefault("TRITON_INTERPRET", "1")

requires_gpu = pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA or ROCm GPU; its CPU twin runs under TRITON_INTERPRET=1")
