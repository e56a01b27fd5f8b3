"""fold_bn: the folded affine equals BatchNorm2d in eval mode (and the reference's fold)."""

import pytest
import torch

import rbench_kernels as rk
from rbench_kernels import reference


def _bn(k: int, affine: bool = True) -> torch.nn.BatchNorm2d:
    torch.manual_seed(k)
    bn = torch.nn.BatchNorm2d(k, eps=1e-3, affine=affine).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 3.0)
        if affine:
            bn.weight.normal_()
            bn.bias.normal_()
    return bn


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_bn_matches_module(affine: bool, with_bias: bool) -> None:
    bn = _bn(24, affine)
    bias = torch.randn(24) if with_bias else None
    scale, shift = rk.fold_bn(bn, bias)
    assert scale.dtype == shift.dtype == torch.float32 and scale.shape == shift.shape == (24,)
    z = torch.randn(3, 24, 4, 4)
    with torch.no_grad():
        want = bn(z + (bias.view(1, -1, 1, 1) if with_bias else 0))
    got = z * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    rs, rsh = reference.fold_bn(bn, bias)
    torch.testing.assert_close(scale, rs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(shift, rsh, rtol=1e-6, atol=1e-5)


def test_fold_bn_ignores_training_mode_and_grad() -> None:
    """Eval semantics: running statistics, whatever mode the module is in; results carry no graph."""
    bn = _bn(8).train()
    scale, shift = rk.fold_bn(bn)
    assert not scale.requires_grad and not shift.requires_grad
    torch.testing.assert_close(scale, bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps))
