"""What `python -m rbench_kernels.check` builds for the quantized kernel (`qconv`): jobs and launch arguments.

int8 and fp8 (e4m3) builds of every shipped config for a ResNet-50 3x3 (layer3, with the residual)
and 1x1 (layer3's reduce, and a stride-2 downsample) at batch 256, all with the quantizing epilogue.
They must use the tensor cores' one-byte MMAs: IMMA on sm_80, IGMMA (int8) / QGMMA (fp8) warpgroup
MMAs on sm_90, v_mfma i8 / fp8 on gfx942 (fp8 there in the fnuz encoding, as `qconv` runs it).
"""

from __future__ import annotations

from typing import Any

KERNEL = "qconv"
DTYPES = {"int8": "*i8", "fp8": "*fp8e4nv"}
# gfx942's fp8 MFMAs take the fnuz encoding (float8_e4m3fnuz, Triton's fp8e4b8), which the kernels run there
TARGET_DTYPES = {"gfx942": {"fp8": "*fp8e4b8"}}
# (n, c, h, w, k, r, stride, pad): ResNet-50 layers at batch 256
LAYERS = {
    "3x3": (256, 256, 14, 14, 256, 3, 1, 1),
    "1x1": (256, 1024, 14, 14, 256, 1, 1, 0),
    "1x1/2": (256, 1024, 28, 28, 256, 1, 2, 0),
}


def jobs(target: str, job_type: Any) -> list:
    """Every config of `qconv.CONFIGS[target]` in int8 and fp8 on the 3x3 and 1x1 layers, and the stride-2 1x1."""
    from . import qconv

    configs = qconv.CONFIGS[target]
    # sm_80 has no fp8 MMA (Triton refuses fp8 tl.dot there); fp8 needs sm_89 / sm_90 (triton_quant says so)
    dtypes = ("int8",) if target == "sm80" else tuple(DTYPES)
    out = [job_type(KERNEL, v, target, dt, cfg) for cfg in configs for v in ("3x3", "1x1") for dt in dtypes]
    return out + [job_type(KERNEL, "1x1/2", target, dt, configs[0]) for dt in dtypes]


def arguments(job: Any) -> tuple[Any, dict[str, Any]]:
    """The kernel and a real launch's argument values (pointers as Triton type strings)."""
    from . import qconv

    n, c, h, w, k, r, st, pad = LAYERS[job.variant]
    p = (h + 2 * pad - r) // st + 1
    ptr = TARGET_DTYPES.get(job.target, {}).get(job.dtype, DTYPES[job.dtype])
    bm, bn, bk, _, _ = job.config
    nhwc = lambda prefix, ch, hh, ww: {f"stride_{prefix}{d}": v for d, v in  # noqa: E731
                                       zip("nchw" if prefix == "x" else "nkpq", (hh * ww * ch, 1, ww * ch, ch))}
    return qconv.qconv_kernel, dict(
        x_ptr=ptr, **nhwc("x", c, h, w), w_ptr=ptr, stride_wk=r * r * c, stride_wc=1, stride_wr=r * c, stride_ws=c,
        scale_ptr="*fp32", shift_ptr="*fp32", res_ptr=ptr, **nhwc("r", k, p, p), y_ptr=ptr,
        res_scale=0.03, inv_out=50.0, N=n, C=c, H=h, W=w, K=k, P=p, Q=p, stride_h=st, stride_w=st,
        pad_h=pad, pad_w=pad, dil_h=1, dil_w=1, R=r, S=r, HAS_RESIDUAL=job.variant == "3x3", RELU=True,
        QUANT_OUT=True, IS_INT=job.dtype == "int8", FNUZ=ptr == "*fp8e4b8", BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
