"""What `python -m rbench_kernels.check` builds: one Job per kernel x shipped config x dtype x target,
and the argument values a real launch of it would pass (ResNet-50 layers at batch 256)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TARGETS: dict[str, tuple[str, int | str, int]] = {
    "sm80": ("cuda", 80, 32),
    "sm90": ("cuda", 90, 32),
    "gfx942": ("hip", "gfx942", 64),
}
KERNELS = ("conv", "conv1x1", "conv_tma", "conv1x1_tma", "splitk", "add", "qconv")
TORCH_TO_TRITON = {"fp16": "fp16", "bf16": "bf16", "tf32": "fp32", "fp32": "fp32"}
# the kernels whose operands move through tensor descriptors (TMA on sm_90)
TMA_KERNELS = ("conv_tma", "conv1x1_tma")


@dataclass(frozen=True)
class Job:
    """One compilation: a kernel variant for a target, dtype and config."""

    kernel: str  # one of KERNELS
    variant: str  # which real layer the argument values mimic
    target: str  # sm80 | sm90 | gfx942
    dtype: str  # fp16 | bf16 | tf32 | fp32 (IEEE)
    config: tuple[int, ...]  # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), (BLOCK_M, BLOCK_N, warps) or (BLOCK, warps)
    split: bool = False  # compiled with SPLIT_K (a split-K launch: fp32 partials instead of the epilogue)

    @property
    def needs_tensor_cores(self) -> bool:
        return self.kernel in ("conv", "conv1x1", "qconv", *TMA_KERNELS) and self.dtype != "fp32"

    @property
    def needs_tma(self) -> bool:
        return self.kernel in TMA_KERNELS and self.target == "sm90"

    @property
    def warps_stages(self) -> tuple[int, int]:
        if self.kernel == "add":
            return self.config[1], 1
        if self.kernel == "splitk":
            return self.config[2], 1
        return self.config[3], self.config[4]


def _gemm_jobs(kernel: str, configs: dict, t: str, variants: tuple[str, ...], ieee: bool = True) -> list[Job]:
    """HALF configs in fp16 and bf16, SMALL ones split in fp16 (the first also bf16), FP32 in tf32 and
    (`ieee`: where the kernel serves it) IEEE fp32."""
    from ._gemm import ConfigKind

    jobs = []
    for v in variants:
        jobs += [Job(kernel, v, t, dt, cfg) for cfg in configs.get(ConfigKind.HALF, []) for dt in ("fp16", "bf16")]
        small = configs.get(ConfigKind.SMALL, [])
        jobs += [Job(kernel, v, t, "fp16", cfg, split=True) for cfg in small]
        jobs += [Job(kernel, v, t, "bf16", cfg, split=True) for cfg in small[:1]]
        fp32 = configs.get(ConfigKind.FP32, [])
        jobs += [Job(kernel, v, t, dt, cfg) for cfg in fp32 for dt in (("tf32", "fp32") if ieee else ("tf32",))]
        # small fp32 launches split with the FP32 configs themselves
        jobs += [Job(kernel, v, t, "tf32", cfg, split=True) for cfg in fp32[:1]]
    return jobs


DTYPES = ("fp16", "bf16", "tf32", "fp32", "int8", "fp8")


def jobs_for(targets: list[str], kernels: list[str], dtypes: tuple[str, ...] = DTYPES) -> list[Job]:
    """Every shipped config of every kernel, for each target and the dtypes and launches it serves.

    Every config appears in fp16 or tf32 (its kind's dtype), so leaving bf16 out (`dtypes`) still
    compiles every config once."""
    from . import add, conv, conv1x1, conv1x1_tma, conv_tma, qconv_check, splitk
    from ._gemm import ConfigKind

    jobs: list[Job] = []
    for t in targets:
        if "conv" in kernels:
            jobs += _gemm_jobs("conv", conv.CONFIGS[t], t, ("3x3",))
            # the stem's flattened taps and ResNeXt's grouped tiles: other code, own configs; the
            # stem both as it comes (3 channels) and padded to 4 (TAP_C)
            for i, cfg in enumerate(conv.CONFIGS[t][ConfigKind.GATHER]):
                jobs += [Job("conv", v, t, dt, cfg) for v in ("stem7x7", "grouped") for dt in ("fp16", "tf32")]
                jobs += [Job("conv", "grouped", t, "bf16", cfg), Job("conv", "stem7x7", t, "fp32", cfg),
                         Job("conv", "grouped", t, "fp32", cfg), Job("conv", "stem7x7c4", t, "fp16", cfg)]
                if i == 0:
                    jobs += [Job("conv", v, t, "fp16", cfg, split=True) for v in ("stem7x7", "stem7x7c4", "grouped")]
        if "conv1x1" in kernels:
            jobs += _gemm_jobs("conv1x1", conv1x1.CONFIGS[t], t, ("1x1",))
            jobs.append(Job("conv1x1", "1x1/2", t, "fp16", conv1x1.CONFIGS[t][ConfigKind.HALF][0]))
        if "conv_tma" in kernels and t in conv_tma.CONFIGS:
            jobs += _gemm_jobs("conv_tma", conv_tma.CONFIGS[t], t, ("3x3",), ieee=False)
            # the strided 4-D descriptor that the stride-2 1x1 does not take (README: measured, not shipped)
            jobs.append(Job("conv_tma", "1x1/2", t, "fp16", conv_tma.CONFIGS[t][ConfigKind.HALF][0]))
        if "conv1x1_tma" in kernels and t in conv1x1_tma.CONFIGS:
            jobs += _gemm_jobs("conv1x1_tma", conv1x1_tma.CONFIGS[t], t, ("1x1",), ieee=False)
        if "splitk" in kernels:
            jobs += [Job("splitk", "1x1", t, dt, splitk.CONFIG) for dt in ("fp16", "bf16", "fp32")]
        if "qconv" in kernels:  # int8 / fp8 (qconv_check.py)
            jobs += qconv_check.jobs(t, Job)
        if "add" in kernels:
            jobs += [Job("add", "elementwise", t, "fp16", cfg) for cfg in add.CONFIGS[t]]
            jobs += [Job("add", "elementwise", t, dt, add.CONFIGS[t][0]) for dt in ("bf16", "fp32")]
    return [j for j in jobs if j.dtype in dtypes]


X_STRIDES = ("stride_xn", "stride_xc", "stride_xh", "stride_xw")
RES_STRIDES = ("stride_rn", "stride_rk", "stride_rp", "stride_rq")


def _nhwc(names: tuple[str, ...], n: int, c: int, h: int, w: int) -> dict[str, int]:
    """The strides of a channels_last (N, C, H, W) tensor in (n, c, h, w) order, under `names`."""
    return dict(zip(names, (h * w * c, 1, w * c, c)))


def _layer(job: Job) -> tuple[int, ...]:
    """(n, c, h, w, k, r, stride, pad, groups, p): the ResNet layer a job mimics, at batch 256."""
    return {
        "stem7x7": (256, 3, 224, 224, 64, 7, 2, 3, 1, 112),
        "stem7x7c4": (256, 4, 224, 224, 64, 7, 2, 3, 1, 112),
        "grouped": (256, 128, 56, 56, 128, 3, 1, 1, 32, 56),  # ResNeXt-50's layer1 3x3
        "3x3": (256, 256, 14, 14, 256, 3, 1, 1, 1, 14),  # ResNet-50's layer3 3x3
        "1x1": (256, 1024, 14, 14, 256, 1, 1, 0, 1, 14),  # layer3's reduce, 1024 -> 256
        "1x1/2": (256, 1024, 28, 28, 256, 1, 2, 0, 1, 14),  # a stride-2 1x1 (the downsample's shape)
    }[job.variant]


def arguments(job: Job) -> tuple[Any, dict[str, Any]]:
    """The kernel and the argument values a real launch would pass (pointers as dtype strings)."""
    from . import add, conv, conv1x1, conv1x1_tma, conv_tma, qconv_check, splitk

    if job.kernel == qconv_check.KERNEL:
        return qconv_check.arguments(job)
    ptr = "*" + TORCH_TO_TRITON[job.dtype]
    if job.kernel == "add":
        return add.add_act_kernel, dict(x_ptr=ptr, r_ptr=ptr, y_ptr=ptr, numel=256 * 256 * 56 * 56, RELU=True,
                                        BLOCK=job.config[0])
    n, c, h, w, k, r, st, pad, groups, p = _layer(job)
    epilogue = dict(scale_ptr="*fp32", shift_ptr="*fp32", res_ptr=ptr, **_nhwc(RES_STRIDES, n, k, p, p),
                    y_ptr=ptr, part_ptr="*fp32", HAS_RESIDUAL=True, RELU=True)
    del epilogue["part_ptr"]
    if job.kernel == "splitk":
        bm, bn, _ = job.config
        return splitk.splitk_reduce_kernel, dict(part_ptr="*fp32", splits=8, **epilogue, unused_ptr="*fp32",
                                                 N=1, K=k, P=p, Q=p, BLOCK_M=bm, BLOCK_N=bn)
    bm, bn, bk, _, _ = job.config
    meta = dict(UPCAST=False, DOT_PRECISION="tf32" if job.dtype == "tf32" else "ieee", SPLIT_K=job.split,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
    sizes = dict(N=n, C=c, K=k, P=p, Q=p)
    if job.kernel == "conv1x1":
        return conv1x1.conv1x1_bn_act_kernel, dict(
            x_ptr=ptr, **_nhwc(X_STRIDES, n, c, h, w), w_ptr=ptr, stride_wk=c, stride_wc=1,
            **epilogue, part_ptr="*fp32", **sizes, conv_stride=st, **meta)
    if job.kernel == "conv1x1_tma":
        return conv1x1_tma.conv1x1_tma_kernel, dict(x_ptr=ptr, w_ptr=ptr, **epilogue, part_ptr="*fp32", **sizes,
                                                    **meta)
    geometry = dict(stride_h=st, stride_w=st, pad_h=pad, pad_w=pad, dil_h=1, dil_w=1)
    if job.kernel == "conv_tma":
        return conv_tma.conv_tma_kernel, dict(
            x_ptr=ptr, w_ptr=ptr, **epilogue, part_ptr="*fp32", **sizes, H=h, W=w, **geometry, R=r, S=r, **meta,
            BOX_W=conv_tma.box_width(p, p, bm))
    cg, kg = c // groups, k // groups
    flat = conv.flat_taps(cg, kg)
    return conv.conv_bn_act_kernel, dict(
        x_ptr=ptr, **_nhwc(X_STRIDES, n, c, h, w),
        # weight (K, C/g, R, S) in channels_last
        w_ptr=ptr, stride_wk=r * r * cg, stride_wc=1, stride_wr=r * cg, stride_ws=cg,
        **epilogue, part_ptr="*fp32", **sizes, H=h, W=w, **geometry, C_PER_G=cg, K_PER_G=kg,
        R=r, S=r, GROUPED=groups > 1, FLAT_K=flat, TAP_C=conv.tap_channels(cg, groups, flat), **meta,
    )


def specialize(fn: Any, values: dict[str, Any]) -> tuple[dict, dict, dict]:
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
        elif isinstance(v, float):  # an fp32 scalar (qconv's scales)
            signature[name] = "fp32"
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
