"""GPU readiness without a GPU: cross-compile every kernel and shipped config with Triton's own compiler.

For CUDA sm_80 and sm_90 and AMD gfx942 this builds each kernel x config x dtype on the CPU
(`triton.compile(ASTSource(...), target=GPUTarget(...))`), then reads the binaries with the tools
Triton bundles: `cuobjdump --dump-resource-usage` (registers, stack/local memory = spills)
and `cuobjdump --dump-sass` (HMMA / HGMMA tensor-core instructions); for gfx942 the AMDGCN assembly
(VGPRs, scratch, v_mfma instructions).  It fails when a shipped config spills or a conv/GEMM kernel
compiles without tensor-core instructions.  Run `python -m rbench_kernels.check --help`.
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

TARGETS: dict[str, tuple[str, int | str, int]] = {
    "sm80": ("cuda", 80, 32),
    "sm90": ("cuda", 90, 32),
    "gfx942": ("hip", "gfx942", 64),
}
KERNELS = ("conv", "conv1x1", "add")
# the most dynamic shared memory one block may use (A100, H100, MI300X)
SHARED_LIMIT = {"sm80": 163 * 1024, "sm90": 227 * 1024, "gfx942": 64 * 1024}
TORCH_TO_TRITON = {"fp16": "fp16", "bf16": "bf16", "tf32": "fp32", "fp32": "fp32"}


@dataclass(frozen=True)
class Job:
    """One compilation: a kernel variant for a target, dtype and config."""

    kernel: str  # conv | conv1x1 | add
    variant: str  # which real layer the argument values mimic
    target: str  # sm80 | sm90 | gfx942
    dtype: str  # fp16 | bf16 | tf32 | fp32 (IEEE)
    config: tuple[int, ...]  # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) or (BLOCK, warps)

    @property
    def needs_tensor_cores(self) -> bool:
        return self.kernel in ("conv", "conv1x1") and self.dtype != "fp32"


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
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _jobs(targets: list[str], kernels: list[str]) -> list[Job]:
    """Every shipped config of every kernel, for each target and the dtypes it serves."""
    from . import add, conv, conv1x1
    from ._gemm import ConfigKind

    jobs: list[Job] = []
    for t in targets:
        if "conv" in kernels:
            for cfg in conv.CONFIGS[t][ConfigKind.HALF]:
                jobs += [Job("conv", "3x3", t, dt, cfg) for dt in ("fp16", "bf16")]
            for cfg in conv.CONFIGS[t][ConfigKind.FP32]:
                jobs += [Job("conv", "3x3", t, dt, cfg) for dt in ("tf32", "fp32")]
            # the stem's flattened taps and ResNeXt's grouped tiles: other code, own configs
            for cfg in conv.CONFIGS[t][ConfigKind.GATHER]:
                jobs += [Job("conv", v, t, dt, cfg) for v in ("stem7x7", "grouped") for dt in ("fp16", "tf32")]
                jobs += [Job("conv", "grouped", t, "bf16", cfg), Job("conv", "stem7x7", t, "fp32", cfg)]
        if "conv1x1" in kernels:
            for cfg in conv1x1.CONFIGS[t][ConfigKind.HALF]:
                jobs += [Job("conv1x1", "1x1", t, dt, cfg) for dt in ("fp16", "bf16")]
            jobs.append(Job("conv1x1", "1x1/2", t, "fp16", conv1x1.CONFIGS[t][ConfigKind.HALF][0]))
            for cfg in conv1x1.CONFIGS[t][ConfigKind.FP32]:
                jobs += [Job("conv1x1", "1x1", t, dt, cfg) for dt in ("tf32", "fp32")]
        if "add" in kernels:
            jobs += [Job("add", "elementwise", t, "bf16", cfg) for cfg in add.CONFIGS[t]]
            jobs += [Job("add", "elementwise", t, dt, add.CONFIGS[t][0]) for dt in ("fp16", "fp32")]
    return jobs


def _nhwc_strides(n: int, c: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Strides of a channels_last (N, C, H, W) tensor, in (n, c, h, w) order."""
    return h * w * c, 1, w * c, c


def _arguments(job: Job) -> tuple[Any, dict[str, Any]]:
    """The kernel and the argument values a real launch would pass (pointers as dtype strings)."""
    from . import add, conv, conv1x1

    ptr = "*" + TORCH_TO_TRITON[job.dtype]
    precision = "tf32" if job.dtype == "tf32" else "ieee"
    if job.kernel == "add":
        block, _ = job.config
        return add.add_act_kernel, dict(
            x_ptr=ptr, r_ptr=ptr, y_ptr=ptr, numel=256 * 256 * 56 * 56, RELU=True, BLOCK=block
        )
    bm, bn, bk, _, _ = job.config
    tile = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
    epilogue = dict(HAS_RESIDUAL=True, RELU=True, UPCAST=False, DOT_PRECISION=precision)
    if job.kernel == "conv1x1":
        # ResNet-50 layer3 at batch 256: 1024 -> 256 channels over 14x14 (stride 2: the downsample)
        s = 2 if job.variant == "1x1/2" else 1
        n, c, h, w, k = 256, 1024, 14 * s, 14 * s, 256
        p = q = 14
        return conv1x1.conv1x1_bn_act_kernel, dict(
            x_ptr=ptr, **dict(zip(("stride_xn", "stride_xc", "stride_xh", "stride_xw"), _nhwc_strides(n, c, h, w))),
            w_ptr=ptr, stride_wk=c, stride_wc=1,
            scale_ptr="*fp32", shift_ptr="*fp32",
            res_ptr=ptr, **dict(zip(("stride_rn", "stride_rk", "stride_rp", "stride_rq"), _nhwc_strides(n, k, p, q))),
            y_ptr=ptr, N=n, C=c, K=k, P=p, Q=q, conv_stride=s, **epilogue, **tile,
        )
    # conv: a ResNet-50 layer3 3x3, the 7x7/2 stem, or ResNeXt-50's layer1 3x3 with groups=32
    if job.variant == "stem7x7":
        n, c, h, w, k, r, st, pad, groups, p = 256, 3, 224, 224, 64, 7, 2, 3, 1, 112
    elif job.variant == "grouped":
        n, c, h, w, k, r, st, pad, groups, p = 256, 128, 56, 56, 128, 3, 1, 1, 32, 56
    else:
        n, c, h, w, k, r, st, pad, groups, p = 256, 256, 14, 14, 256, 3, 1, 1, 1, 14
    cg, kg = c // groups, k // groups
    return conv.conv_bn_act_kernel, dict(
        x_ptr=ptr, **dict(zip(("stride_xn", "stride_xc", "stride_xh", "stride_xw"), _nhwc_strides(n, c, h, w))),
        # weight (K, C/g, R, S) in channels_last
        w_ptr=ptr, stride_wk=r * r * cg, stride_wc=1, stride_wr=r * cg, stride_ws=cg,
        scale_ptr="*fp32", shift_ptr="*fp32",
        res_ptr=ptr, **dict(zip(("stride_rn", "stride_rk", "stride_rp", "stride_rq"), _nhwc_strides(n, k, p, p))),
        y_ptr=ptr, N=n, C=c, H=h, W=w, K=k, P=p, Q=p,
        stride_h=st, stride_w=st, pad_h=pad, pad_w=pad, dil_h=1, dil_w=1, C_PER_G=cg, K_PER_G=kg,
        R=r, S=r, GROUPED=groups > 1, FLAT_K=conv.flat_taps(cg, kg), **epilogue, **tile,
    )


def _specialize(fn: Any, values: dict[str, Any]) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) as Triton's launcher derives them from real arguments.

    Pointers are 16-byte aligned; integers equal to 1 become constants and multiples of 16 are
    marked divisible by 16 (what lets Triton vectorise loads) -- the same rules the JIT applies.
    """
    constexpr_names = {p.name for p in fn.params if p.is_constexpr}
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, name in enumerate(fn.arg_names):
        v = values[name]
        if name in constexpr_names:
            signature[name], constexprs[name] = "constexpr", v
        elif isinstance(v, str):
            signature[name] = v
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif v == 1:
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs


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
        hgmma, hmma = len(re.findall(r"\bHGMMA\.", sass)), len(re.findall(r"\bHMMA\.", sass))
        res.mma, res.mma_kind = hgmma + hmma, ("HGMMA" if hgmma else "HMMA" if hmma else "")
    res.shared_bytes = int(compiled.metadata.shared)


def _inspect_hip(res: Result, compiled: Any) -> None:
    asm = compiled.asm["amdgcn"]

    def field_(name: str) -> int | None:
        m = re.search(rf";\s*{name}:\s*(\d+)", asm)
        return int(m.group(1)) if m else None

    vgpr, agpr = field_("NumVgprs"), field_("NumAgprs") or 0
    res.registers = None if vgpr is None else vgpr + agpr
    scratch = field_("ScratchSize")
    res.spill_bytes = scratch
    res.mma = len(re.findall(r"\bv_mfma_", asm))
    res.mma_kind = "MFMA" if res.mma else ""
    res.shared_bytes = int(compiled.metadata.shared)


def compile_one(job: Job) -> Result:
    """Compile one job for its target and read back its resource use; errors become a failed Result."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    res = Result(job)
    start = time.perf_counter()
    try:
        kernel, values = _arguments(job)
        fn = _as_jit(kernel)
        signature, constexprs, attrs = _specialize(fn, values)
        backend, arch, warp = TARGETS[job.target]
        warps, stages = (job.config[1], 1) if job.kernel == "add" else job.config[3:5]
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
    if not res.ok:
        res.problems.append("compile failed: " + res.error)
    else:
        if res.spill_bytes:
            res.problems.append(f"spills {res.spill_bytes} bytes")
        if res.shared_bytes is not None and res.shared_bytes > SHARED_LIMIT[job.target]:
            res.problems.append(f"needs {res.shared_bytes} B shared memory > {SHARED_LIMIT[job.target]}")
        if job.needs_tensor_cores and not res.mma:
            res.problems.append("no tensor-core instructions")
    return res


def run_check(
    targets: list[str] | None = None, kernels: list[str] | None = None, jobs: int | None = None
) -> list[Result]:
    """Compile every job (in `jobs` worker processes) and return the results in job order."""
    todo = _jobs(list(targets or TARGETS), list(kernels or KERNELS))
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


def format_table(results: list[Result]) -> str:
    head = ("target", "kernel", "variant", "dtype", "config", "regs", "spill B", "smem B", "tensor cores", "s", "verdict")
    rows = []
    for r in results:
        j = r.job
        cfg = "x".join(map(str, j.config[:3])) + f" w{j.config[3]} s{j.config[4]}" if len(j.config) == 5 else f"{j.config[0]} w{j.config[1]}"
        tc = f"{r.mma_kind} x{r.mma}" if r.mma else ("none" if r.ok else "-")
        if r.ok and not j.needs_tensor_cores and not r.mma:
            tc = "n/a (FMA)" if j.kernel != "add" else "n/a"
        verdict = "ok" if not r.problems else "FAIL: " + "; ".join(r.problems)
        rows.append((j.target, j.kernel, j.variant, j.dtype, cfg, _fmt(r.registers), _fmt(r.spill_bytes),
                     _fmt(r.shared_bytes), tc, f"{r.seconds:.1f}", verdict))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in (head, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Cross-compile and print the table; exit status 1 if any shipped config spills, lacks tensor cores or fails."""
    parser = argparse.ArgumentParser(prog="python -m rbench_kernels.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, from {', '.join(TARGETS)}")
    parser.add_argument("--kernels", default=",".join(KERNELS), help=f"comma-separated, from {', '.join(KERNELS)}")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    kernels = [k for k in args.kernels.split(",") if k]
    for name, given, known in (("target", targets, TARGETS), ("kernel", kernels, KERNELS)):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"unknown {name} {', '.join(unknown)}; known: {', '.join(known)}")

    import triton

    start = time.perf_counter()
    results = run_check(targets, kernels, args.jobs)
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
            json.dump([{**asdict(r), "job": asdict(r.job)} for r in results], f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
