"""Shared test set-up. Without a GPU, Triton kernels run under the interpreter: the variable must be
set before triton is first imported, hence here, at the top of the first conftest pytest loads."""

import os

import pytest


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if not _has_gpu():
    os.environ.setdefault("TRITON_INTERPRET", "1")

requires_gpu = pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA or ROCm GPU; its CPU twin runs under TRITON_INTERPRET=1")
