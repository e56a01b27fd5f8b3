"""Stochastic depth (rbench.run.zoo.depth): linear decay, dropped branches not computed, inference unchanged,
the deep networks (1202 and 1001 layers) through a training step, and the suite field that asks for it."""

import random

import pytest
import torch
import torchvision
from test_zoo import one_thread  # noqa: F401  (autouse: these networks on one CPU thread)
from torch import nn

from rbench import spec
from rbench.run import models, zoo
from rbench.run.zoo import depth


def test_survival_decays_linearly_from_the_input_to_the_last_block():
    assert depth.survival_probabilities(4, 0.5) == pytest.approx([0.875, 0.75, 0.625, 0.5])
    model = zoo.stochastic_depth(zoo.build("cifar_resnet20"), 0.5)
    wrapped = [m for m in model.modules() if isinstance(m, depth.Skippable)]
    assert len(wrapped) == 9 and wrapped[-1].survival == pytest.approx(0.5)
    assert wrapped[0].survival == pytest.approx(1 - 0.5 / 9)


@pytest.mark.parametrize("name, size", [("cifar_resnet20", 8), ("wrn_16_8", 8), ("resnet50_v1", 32)])
def test_inference_is_the_network_without_stochastic_depth(name, size):
    torch.manual_seed(0)
    plain = zoo.build(name).eval()
    torch.manual_seed(0)
    dropped = zoo.stochastic_depth(zoo.build(name), 0.2).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.equal(plain(x), dropped(x))


class Always(random.Random):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def random(self):
        return self.value


def branch_convs_run(block, x):
    runs = []
    hooks = [m.register_forward_hook(lambda *a: runs.append(1)) for m in block.modules() if isinstance(m, nn.Conv2d)]
    try:
        return block(x), len(runs)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("block, shape", [
    (torchvision.models.resnet.BasicBlock(8, 8), (2, 8, 4, 4)),
    (torchvision.models.resnet.Bottleneck(32, 8), (2, 32, 4, 4)),
    (zoo.blocks.PreActBottleneck(16, 32, stride=2), (2, 16, 8, 8)),
])
def test_a_dropped_block_skips_its_branch_and_a_kept_one_scales_it(block, shape):
    x = torch.randn(shape)
    split = depth.split_of(block)
    inp, shortcut = split.enter(block, x)
    projection = 1 if getattr(block, "shortcut", None) is not None else 0
    skip = depth.Skippable(block, 0.6, Always(0.9)).train()
    out, convs = branch_convs_run(skip, x)
    assert convs == projection  # only the projection shortcut, if any: no branch convolution ran
    assert torch.allclose(out, split.finish(block, shortcut)) and skip.dropped == 1
    keep = depth.Skippable(block, 0.6, Always(0.1)).train()
    torch.manual_seed(0)
    out = keep(x)
    torch.manual_seed(0)
    inp, shortcut = split.enter(block, x)
    expected = split.finish(block, split.branch(block, inp) / 0.6 + shortcut)
    assert torch.allclose(out, expected, atol=1e-6) and keep.dropped == 0


def test_a_network_without_residual_blocks_is_refused():
    with pytest.raises(ValueError, match="has none"):
        zoo.stochastic_depth(zoo.build("cifar_plain20"), 0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        zoo.stochastic_depth(zoo.build("cifar_resnet20"), 0.0)


@pytest.mark.parametrize("name", ["cifar_resnet1202", "preact_resnet1001"])
def test_the_deepest_networks_train_a_step_eagerly_with_stochastic_depth(name):
    torch.manual_seed(0)
    model = zoo.stochastic_depth(zoo.build(name), 0.5).train()
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 7])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    models.sgd(model).step()
    wrapped = [m for m in model.modules() if isinstance(m, depth.Skippable)]
    assert torch.isfinite(loss) and len(wrapped) in (600, 333)
    # With p_L = 0.5 about a quarter of the blocks are skipped in one step (expected 1 - mean p_l = 0.25).
    assert 0.15 < sum(m.dropped for m in wrapped) / len(wrapped) < 0.35


def test_the_suite_field_reaches_training_cases_and_the_built_model():
    text = ("name: sd\nmodels: [cifar_resnet20, resnet18]\nbatch_sizes: [2]\nprecisions: [fp32]\nbackends: [eager]\n"
            "modes: [inference, training]\nstochastic_depth: 0.5\n")
    cases = spec.parse(text, "sd.yaml", models.names()).cases("cpu")
    assert [c.stochastic_depth for c in cases] == [None, 0.5, None, 0.5]
    assert cases[1].id.endswith("/sd0.5") and "/sd" not in cases[0].id
    assert cases[1].key() != spec.record_key({**cases[1].to_dict(), "stochastic_depth": None})
    built = models.build(cases[1], torch.device("cpu"))
    assert sum(isinstance(m, depth.Skippable) for m in built.model.modules()) == 9
    assert not any(isinstance(m, depth.Skippable) for m in models.build(cases[0], torch.device("cpu")).model.modules())
    with pytest.raises(spec.SpecError, match=r"sd.yaml:7: field 'stochastic_depth'.*\(0, 1\]"):
        spec.parse(text.replace("0.5", "1.5"), "sd.yaml", models.names())


def test_under_torch_compile_every_step_draws_afresh():
    """The draw is never traced (a graph break with a guard on its outcome): compiled, blocks still drop."""
    torch.manual_seed(0)
    model = zoo.stochastic_depth(zoo.build("cifar_resnet20"), 0.5).train()
    compiled = torch.compile(model, backend="eager")  # dynamo's tracing and guards, without inductor's compile time
    for _ in range(8):
        compiled(torch.randn(2, 3, 8, 8)).sum().backward()
    dropped = [m.dropped for m in model.modules() if isinstance(m, depth.Skippable)]
    assert 0 < sum(dropped) < 8 * len(dropped) and dropped[-1] > 0
