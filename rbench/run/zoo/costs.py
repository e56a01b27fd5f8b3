"""The cost metadata of the papers' networks, as torchvision's weights carry theirs: what `rbench list` shows.

name -> (parameters, GMACs of one image at the network's default size), exactly what
`rbench.run.models.count_params` and `count_flops` / 2 / 1e9 (rounded to 3 decimals) give;
tests/test_zoo.py holds every entry to those counters, so a changed network cannot keep a stale figure.
"""

from __future__ import annotations

COST: dict[str, tuple[int, float]] = {
    "resnet50_v1": (25_557_032, 3.858),
    "resnet101_v1": (44_549_160, 7.57),
    "resnet152_v1": (60_192_808, 11.282),
    "plain18": (11_515_688, 1.795),
    "plain34": (21_623_848, 3.644),
    "cifar_resnet20": (269_722, 0.041),
    "cifar_resnet32": (464_154, 0.069),
    "cifar_resnet44": (658_586, 0.097),
    "cifar_resnet56": (853_018, 0.125),
    "cifar_resnet110": (1_727_962, 0.253),
    "cifar_resnet1202": (19_421_274, 2.829),
    "cifar_resnet20_b": (272_474, 0.041),
    "cifar_resnet32_b": (466_906, 0.069),
    "cifar_resnet44_b": (661_338, 0.097),
    "cifar_resnet56_b": (855_770, 0.126),
    "cifar_resnet110_b": (1_730_714, 0.253),
    "cifar_resnet1202_b": (19_424_026, 2.83),
    "cifar_plain20": (269_722, 0.041),
    "cifar_plain32": (464_154, 0.069),
    "cifar_plain44": (658_586, 0.097),
    "cifar_plain56": (853_018, 0.125),
    "cifar_plain110": (1_727_962, 0.253),
    "preact_resnet18": (11_687_720, 1.814),
    "preact_resnet34": (21_795_880, 3.664),
    "preact_resnet50": (25_549_352, 4.089),
    "preact_resnet101": (44_541_480, 7.801),
    "preact_resnet152": (60_185_128, 11.514),
    "preact_resnet200": (64_666_152, 15.007),
    "preact_resnet164": (1_703_258, 0.248),
    "preact_resnet1001": (10_327_706, 1.491),
    "wrn_16_8": (10_961_370, 1.548),
    "wrn_28_10": (36_479_194, 5.243),
    "wrn_40_4": (8_949_210, 1.299),
    "resnext29_8x64d": (34_426_698, 5.387),
    "resnext29_16x64d": (68_155_210, 10.689),
}
