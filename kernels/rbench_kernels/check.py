"""GPU readiness without a GPU: cross-compile every kernel and shipped config with Triton's own compiler.

For CUDA sm_80 and sm_90 and AMD gfx942 this builds each kernel x config x dtype on the CPU
(`triton.compile(ASTSource(...), target=GPUTarget(...))`; `check_jobs.py` says what), then reads the
binaries with the tools Triton bundles: `cuobjdump --dump-resource-usage` (registers, stack/local
memory = spills) and `cuobjdump --dump-sass` (HMMA / HGMMA tensor-core instructions, UTMALDG /
UTMASTG TMA copies, the main loop's length); for gfx942 the AMDGCN assembly (VGPRs, scratch,
v_mfma instructions).  It fails when a shipped config spills, needs more shared memory than the
target has, a conv/GEMM kernel compiles without tensor-core instructions, or a TMA kernel's sm_90
build without TMA instructions.  Run `python -m rbench_kernels.check --help`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from .check_jobs import DTYPES, KERNELS, TARGETS, Job, arguments, jobs_for, specialize

__all__ = ["KERNELS", "TARGETS", "Job", "Result", "compile_one", "problems", "run_check", "format_table", "as_records",
           "main"]

# the most dynamic shared memory one block may use (A100, H100, MI300X)
SHARED_LIMIT = {"sm80": 163 * 1024, "sm90": 227 * 1024, "gfx942": 64 * 1024}
# The MMAs a one-byte build must use: IMMA / IGMMA or v_mfma_*_i8 for int8, QGMMA or v_mfma_*_fp8 for fp8
# (an e4m3fn dot on gfx942 compiles to fp16 MFMAs with software conversions: qconv runs fnuz there).
ONE_BYTE_MMA = {"int8": r"\bIG?MMA\b|_i8\b", "fp8": r"\bQGMMA\b|_fp8\b"}


@dataclass
class Result:
    job: Job
    ok: bool = False
    error: str = ""
    registers: int | None = None  # per thread: registers (NVIDIA) or VGPRs incl. AGPRs (AMD)
    spill_bytes: int | None = None  # stack/local bytes per thread (NVIDIA), scratch bytes (AMD)
    shared_bytes: int | None = None  # dynamic shared memory / LDS the launch needs
    mma: int | None = None  # tensor-core instructions in the binary
    mma_kind: str = ""
    mma_ops: str = ""  # which MMAs: the SASS kinds (NVIDIA), the distinct v_mfma mnemonics (AMD)
    tma: int | None = None  # TMA copies: UTMALDG + UTMASTG in sm_90 SASS (None on other targets)
    loop: int | None = None  # instructions in the main loop (the innermost loop holding the MMAs)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _as_jit(kernel: Any) -> Any:
    """The kernel's JITFunction; an interpreting process (TRITON_INTERPRET=1) has none to compile."""
    from triton.runtime.jit import JITFunction

    if not isinstance(kernel, JITFunction):
        raise RuntimeError("TRITON_INTERPRET=1 in this process: compile in one without it (run_check does)")
    return kernel


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _inspect_cuda(res: Result, compiled: Any, arch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", cubin], capture_output=True, text=True)
        # ptxas puts spilled registers in the stack frame, in local memory: Triton kernels have no
        # other use for either, so STACK/LOCAL > 0 means spills (what `ptxas -v` reports as
        # "bytes stack frame, ... spill stores").
        m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", usage.stdout)
        if m:
            res.registers = int(m.group(1))
            res.spill_bytes = max(int(m.group(2)), int(m.group(4)))
        sass = subprocess.run([_tool("cuobjdump"), "--dump-sass", cubin], capture_output=True, text=True).stdout
        # HMMA/HGMMA: fp16/bf16/tf32; IMMA/IGMMA: int8 (qconv); QGMMA: fp8 warpgroup MMAs (qconv)
        counts = {kind: len(re.findall(rf"\b{kind}\.", sass)) for kind in ("HGMMA", "IGMMA", "QGMMA", "HMMA", "IMMA")}
        res.mma = sum(counts.values())
        res.mma_kind = res.mma_ops = "+".join(kind for kind, count in counts.items() if count)
        if arch >= 90:
            res.tma = len(re.findall(r"\bUTMA(?:LDG|STG)\b", sass))
        res.loop = sass_main_loop(sass)
    res.shared_bytes = int(compiled.metadata.shared)


def sass_main_loop(sass: str) -> int | None:
    """Instructions in the smallest loop (a backward branch's span) that holds an MMA instruction.

    A static measure of the work per reduction step: address math, masks and loads around the
    MMAs.  None when no loop holds one (e.g. the fp32 FMA builds)."""
    ins = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best = None
    for addr, text in ins:
        b = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if b and int(b.group(1), 16) <= addr:
            body = [t for a, t in ins if int(b.group(1), 16) <= a <= addr]
            if any(re.search(r"\b[HIQ]G?MMA\.", t) for t in body) and (best is None or len(body) < best):
                best = len(body)
    return best


def _inspect_hip(res: Result, compiled: Any) -> None:
    asm = compiled.asm["amdgcn"]

    def field_(name: str) -> int | None:
        m = re.search(rf";\s*{name}:\s*(\d+)", asm)
        return int(m.group(1)) if m else None

    vgpr, agpr = field_("NumVgprs"), field_("NumAgprs") or 0
    res.registers = None if vgpr is None else vgpr + agpr
    scratch = field_("ScratchSize")
    res.spill_bytes = scratch
    mfmas = re.findall(r"\bv_mfma_\w+", asm)
    res.mma = len(mfmas)
    res.mma_kind = "MFMA" if res.mma else ""
    res.mma_ops = "+".join(sorted(set(mfmas)))
    res.loop = amdgcn_main_loop(asm)
    res.shared_bytes = int(compiled.metadata.shared)


def amdgcn_main_loop(asm: str) -> int | None:
    """As sass_main_loop, for AMDGCN assembly: the smallest label..backward-branch span with a v_mfma."""
    lines = [ln.split(";")[0].strip() for ln in asm.splitlines()]
    labels = {m.group(1): i for i, ln in enumerate(lines) if (m := re.match(r"^(\.LBB\w+):", ln))}
    best = None
    for i, ln in enumerate(lines):
        b = re.match(r"^s_(?:c)?branch\w*\s+(\.LBB\w+)", ln)
        if b and labels.get(b.group(1), i + 1) <= i:
            body = [x for x in lines[labels[b.group(1)]:i + 1] if re.match(r"^[a-z]", x)]
            if any(x.startswith("v_mfma") for x in body) and (best is None or len(body) < best):
                best = len(body)
    return best


def compile_one(job: Job) -> Result:
    """Compile one job for its target and read back its resource use; errors become a failed Result."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    res = Result(job)
    start = time.perf_counter()
    try:
        kernel, values = arguments(job)
        fn = _as_jit(kernel)
        signature, constexprs, attrs = specialize(fn, values)
        backend, arch, warp = TARGETS[job.target]
        warps, stages = job.warps_stages
        try:
            src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
        except TypeError:  # an older Triton without `attrs`
            src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
        compiled = triton.compile(
            src, target=GPUTarget(backend, arch, warp), options={"num_warps": warps, "num_stages": stages}
        )
        if backend == "cuda":
            _inspect_cuda(res, compiled, int(arch))
        else:
            _inspect_hip(res, compiled)
        res.ok = True
    except Exception as e:  # report, do not crash the whole check
        res.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    res.seconds = time.perf_counter() - start
    res.problems = problems(res)
    return res


def problems(res: Result) -> list[str]:
    """Why a build fails the check: it did not compile, spills, needs more shared memory than the
    target has, lacks the tensor-core instructions its dtype demands, or is a TMA kernel's sm_90
    build without TMA instructions."""
    if not res.ok:
        return ["compile failed: " + res.error]
    job, found = res.job, []
    if res.spill_bytes:
        found.append(f"spills {res.spill_bytes} bytes")
    if res.shared_bytes is not None and res.shared_bytes > SHARED_LIMIT[job.target]:
        found.append(f"needs {res.shared_bytes} B shared memory > {SHARED_LIMIT[job.target]}")
    if job.needs_tensor_cores and not res.mma:
        found.append("no tensor-core instructions")
    elif job.dtype in ONE_BYTE_MMA and res.mma and not re.search(ONE_BYTE_MMA[job.dtype], res.mma_ops):
        found.append(f"{job.dtype} on wider tensor cores ({res.mma_ops}), not its one-byte MMA")
    if job.needs_tma and not res.tma:
        found.append("a TMA kernel without TMA instructions")
    return found


def as_records(results: list[Result]) -> list[dict]:
    """The results as --json writes them: one dict per build (job, registers, spills, mma, tma, ...)."""
    return [{**asdict(r), "job": asdict(r.job)} for r in results]


def run_check(
    targets: list[str] | None = None, kernels: list[str] | None = None, jobs: int | None = None,
    dtypes: list[str] | None = None,
) -> list[Result]:
    """Compile every job (in `jobs` worker processes) and return the results in job order."""
    todo = jobs_for(list(targets or TARGETS), list(kernels or KERNELS), tuple(dtypes or DTYPES))
    workers = max(1, jobs or os.cpu_count() or 1)
    # Fresh (spawned) worker processes without TRITON_INTERPRET: an interpreting process patches
    # triton.language and cannot compile for a GPU, and the test suite interprets.
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(compile_one, todo, chunksize=1))
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def format_config(job: Job) -> str:
    """128x64x32 w8 s3 (a GEMM tile), 32x128 w4 (split-K's pass) or 4096 w8 (add)."""
    c = job.config
    if len(c) == 5:
        return "x".join(map(str, c[:3])) + f" w{c[3]} s{c[4]}"
    return "x".join(map(str, c[:-1])) + f" w{c[-1]}"


def format_table(results: list[Result]) -> str:
    head = ("target", "kernel", "variant", "dtype", "config", "regs", "spill B", "smem B", "tensor cores", "tma",
            "loop", "s", "verdict")
    rows = []
    for r in results:
        j = r.job
        tc = f"{r.mma_kind} x{r.mma}" if r.mma else ("none" if r.ok else "-")
        if r.ok and not j.needs_tensor_cores and not r.mma:
            tc = "n/a (FMA)" if j.kernel in ("conv", "conv1x1", "conv_tma", "conv1x1_tma") else "n/a"
        verdict = "ok" if not r.problems else "FAIL: " + "; ".join(r.problems)
        variant = j.variant + (" split" if j.split else "")
        rows.append((j.target, j.kernel, variant, j.dtype, format_config(j), _fmt(r.registers), _fmt(r.spill_bytes),
                     _fmt(r.shared_bytes), tc, _fmt(r.tma), _fmt(r.loop), f"{r.seconds:.1f}", verdict))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in (head, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Cross-compile and print the table; exit status 1 if any build fails the check (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m rbench_kernels.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, from {', '.join(TARGETS)}")
    parser.add_argument("--kernels", default=",".join(KERNELS), help=f"comma-separated, from {', '.join(KERNELS)}")
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help=f"comma-separated, from {', '.join(DTYPES)} (without bf16 every config still builds once)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    kernels = [k for k in args.kernels.split(",") if k]
    dtypes = [d for d in args.dtypes.split(",") if d]
    for name, given, known in (("target", targets, TARGETS), ("kernel", kernels, KERNELS), ("dtype", dtypes, DTYPES)):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"unknown {name} {', '.join(unknown)}; known: {', '.join(known)}")

    import triton

    start = time.perf_counter()
    results = run_check(targets, kernels, args.jobs, dtypes)
    print(format_table(results))
    failed = [r for r in results if r.problems]
    hip_failed = [r for r in results if r.job.target == "gfx942" and not r.ok]
    if hip_failed and len(hip_failed) == sum(r.job.target == "gfx942" for r in results):
        print(
            "\nThe hip backend could not compile anything here.  Recent Triton (3.8 included) links AMD code objects "
            "in-process (amd.link_hsaco); older releases run an ld.lld (Triton's backends/amd/llvm/bin or "
            f"ROCm's), which must then be installed.  First error: {hip_failed[0].error}"
        )
    print(
        f"\n{len(results)} compilations with triton {triton.__version__} in {time.perf_counter() - start:.0f} s: "
        f"{len(results) - len(failed)} ok, {len(failed)} failed"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(as_records(results), f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
