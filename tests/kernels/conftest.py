"""Kernel tests run the Triton kernels under the CPU interpreter unless a CUDA GPU is present.

`@triton.jit` decides between compiling and interpreting when rbench_kernels is imported, so the
variable must be set before that import -- here, at collection time.  On a GPU machine it stays
unset and the same tests run the compiled kernels on the GPU instead (see kernel_cases.DEVICE).

RBENCH_KERNEL_TESTS=quick runs only the tests marked `quick` (test_paths.py: every launch path
once) and, on a GPU, launches one config per kernel instead of autotuning
(RBENCH_KERNELS_ONE_CONFIG=1): the GPU session's first stage, under a minute on a cold cache.
"""

import ctypes
import dataclasses
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

QUICK = os.environ.get("RBENCH_KERNEL_TESTS", "").strip().lower() == "quick"
if QUICK:
    os.environ.setdefault("RBENCH_KERNELS_ONE_CONFIG", "1")
HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "quick: the quick tier of the kernel tests (RBENCH_KERNEL_TESTS=quick)")


def pytest_collection_modifyitems(config, items) -> None:
    """Under RBENCH_KERNEL_TESTS=quick, deselect this directory's tests that are not marked quick."""
    if not QUICK:
        return
    slow = [i for i in items if str(i.path).startswith(HERE) and i.get_closest_marker("quick") is None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        slow_ids = {id(i) for i in slow}
        items[:] = [i for i in items if id(i) not in slow_ids]


@pytest.fixture(autouse=True)
def _fast_interpreter():
    """Skip the interpreter's int32 overflow sanitizer during these tests.

    Triton's interpreter checks every 32-bit integer add/sub/mul for overflow, which is more than
    half of its run time on these kernels.  The test shapes are a few pixels, far from 2**31, and
    compiled GPU code does not sanitize either; the launchers reject tensors of 2**31 elements or
    more.  Restored after each test; a no-op if this Triton has no such option.
    """
    try:
        from triton.runtime import interpreter
        builder = interpreter.interpreter_builder
        saved = builder.options
        builder.options = dataclasses.replace(saved, sanitize_overflow=False)
    except (ImportError, AttributeError, TypeError):
        yield
        return
    try:
        yield
    finally:
        builder.options = saved


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_blas():
    """Run numpy's OpenBLAS on one thread while these tests run.

    The interpreter computes each tl.dot with numpy.matmul on small tiles; a multi-threaded
    OpenBLAS then spends most of its time synchronising its threads, and on a busy two-core CI
    machine that made the interpreter tests three times slower.  (What threadpoolctl does, without
    the dependency; Linux only, a no-op where the library cannot be found.)
    """
    restore = []
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
        for path in paths:
            lib = ctypes.CDLL(path)
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    if setter is not None and getter is not None:
                        restore.append((setter, getter()))
                        setter(1)
    except OSError:
        pass
    yield
    for setter, threads in restore:
        setter(threads)
