"""Bad arguments raise ValueError naming the argument and the shapes seen."""

import pytest
import torch
from kernel_cases import DEVICE, needs_device

import rbench_kernels as rk

pytestmark = needs_device


def _conv_args(**over):
    a = dict(
        x=torch.randn(2, 16, 5, 5, device=DEVICE), weight=torch.randn(32, 16, 3, 3, device=DEVICE),
        scale=torch.ones(32, device=DEVICE), shift=torch.zeros(32, device=DEVICE),
    )
    a.update(over)
    return a


CONV_CASES = [
    ("weight_channels", _conv_args(weight=torch.randn(32, 8, 3, 3)), {}, r"weight .*\(32, 8, 3, 3\)"),
    ("groups_divide", _conv_args(weight=torch.randn(32, 4, 3, 3)), {"groups": 3}, r"groups=3.*\(2, 16, 5, 5\)"),
    ("scale_length", _conv_args(scale=torch.ones(31)), {}, r"scale.*\(32,\).*\(31,\)"),
    ("shift_length", _conv_args(shift=torch.zeros(32, 1)), {}, r"shift.*\(32, 1\)"),
    ("scale_dtype", _conv_args(scale=torch.ones(32, dtype=torch.float16)), {}, r"scale must be float32"),
    ("residual_shape", _conv_args(), {"residual": torch.randn(2, 32, 3, 3)}, r"residual.*\(2, 32, 5, 5\).*\(2, 32, 3, 3\)"),
    ("residual_dtype", _conv_args(), {"residual": torch.randn(2, 32, 5, 5, dtype=torch.float16)}, r"residual.*float16"),
    ("x_dtype", _conv_args(x=torch.randn(2, 16, 5, 5).double()), {}, r"x has unsupported dtype torch.float64"),
    ("x_int", _conv_args(x=torch.ones(2, 16, 5, 5, dtype=torch.int32)), {}, r"x has unsupported dtype"),
    ("weight_dtype", _conv_args(weight=torch.randn(32, 16, 3, 3).half()), {}, r"weight has dtype torch.float16"),
    ("x_ndim", _conv_args(x=torch.randn(16, 5, 5)), {}, r"x must be 4-D, got shape \(16, 5, 5\)"),
    ("empty_output", _conv_args(x=torch.randn(2, 16, 2, 2)), {"padding": 0}, r"P=0, Q=0"),
    ("bad_stride", _conv_args(), {"stride": 0}, r"stride >= 1"),
    ("stride_type", _conv_args(), {"stride": (1, 2, 3)}, r"stride must be an int or a pair"),
    ("not_tensor", _conv_args(scale=[1.0] * 32), {}, r"scale must be a torch.Tensor"),
]


@pytest.mark.parametrize("name, args, kwargs, match", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_bn_act_rejects(name, args, kwargs, match) -> None:
    args = {k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    kwargs = {k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    kwargs.setdefault("padding", 1)
    with pytest.raises(ValueError, match=match):
        rk.conv_bn_act(**args, **kwargs)


def test_conv1x1_rejects() -> None:
    x = torch.randn(2, 16, 4, 4, device=DEVICE)
    ones, zeros = torch.ones(8, device=DEVICE), torch.zeros(8, device=DEVICE)
    with pytest.raises(ValueError, match=r"weight must be \(K, C=16\).*\(8, 12\)"):
        rk.conv1x1_bn_act(x, torch.randn(8, 12, device=DEVICE), ones, zeros)
    with pytest.raises(ValueError, match=r"\(K, C\) or \(K, C, 1, 1\), got \(8, 16, 3, 3\)"):
        rk.conv1x1_bn_act(x, torch.randn(8, 16, 3, 3, device=DEVICE), ones, zeros)
    with pytest.raises(ValueError, match=r"residual.*\(2, 8, 2, 2\).*\(2, 8, 4, 4\)"):
        rk.conv1x1_bn_act(x, torch.randn(8, 16, device=DEVICE), ones, zeros, stride=2,
                          residual=torch.randn(2, 8, 4, 4, device=DEVICE))
    with pytest.raises(ValueError, match=r"stride must be a positive int"):
        rk.conv1x1_bn_act(x, torch.randn(8, 16, device=DEVICE), ones, zeros, stride=(2, 2))


def test_add_act_rejects() -> None:
    a = torch.randn(2, 3, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match=r"residual must have x's shape \(2, 3, 4, 4\), got \(2, 3, 4, 5\)"):
        rk.add_act(a, torch.randn(2, 3, 4, 5, device=DEVICE))
    with pytest.raises(ValueError, match=r"residual has dtype torch.float16"):
        rk.add_act(a, a.half())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to put tensors on two devices")
def test_devices_must_match() -> None:
    a = _conv_args()
    a["scale"] = a["scale"].cpu() if DEVICE == "cuda" else a["scale"].cuda()
    with pytest.raises(ValueError, match=r"one device.*scale on"):
        rk.conv_bn_act(**a, padding=1)


def test_devices_must_match_meta() -> None:
    """Mixed devices without a GPU: a 'meta' tensor stands in for the second device."""
    a = _conv_args(shift=torch.zeros(32, device="meta"))
    with pytest.raises(ValueError, match=r"all tensors must be on one device, got .*shift on meta"):
        rk.conv_bn_act(**a, padding=1)


def test_fold_bn_rejects() -> None:
    with pytest.raises(ValueError, match="no running statistics"):
        rk.fold_bn(torch.nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match=r"conv_bias .*\(4,\).*\(5,\)"):
        rk.fold_bn(torch.nn.BatchNorm2d(4), torch.zeros(5))
    with pytest.raises(ValueError, match="BatchNorm2d"):
        rk.fold_bn(torch.nn.Conv2d(4, 4, 1))
