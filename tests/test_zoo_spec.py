"""Suites of the papers' networks: per-model image sizes, the shipped suites and their CPU profiles, `rbench list`."""

import subprocess
import sys
from pathlib import Path

import pytest

from rbench import spec
from rbench.run import models

ROOT = Path(__file__).resolve().parent.parent
BASE = ("name: mixed\nmodels: [cifar_resnet20, resnet18]\nbatch_sizes: [1]\nprecisions: [fp32]\nbackends: [eager]\n"
        "modes: [inference]\n")


def sizes(text):
    return {c.model: c.image_size for c in spec.parse(text, "mixed.yaml", models.names()).for_device("cpu").cases("cpu")}


@pytest.mark.parametrize("extra, expected", [
    ("", {"cifar_resnet20": 32, "resnet18": 224}),  # each model's own
    ("image_size: 64\n", {"cifar_resnet20": 64, "resnet18": 64}),  # an integer: every model
    ("image_size: {resnet18: 112}\n", {"cifar_resnet20": 32, "resnet18": 112}),
    ("image_size: {cifar_resnet20: 40, default: 96}\n", {"cifar_resnet20": 40, "resnet18": 96}),
    ("image_size: 64\noverrides:\n  cpu: {image_size: {cifar_resnet20: 48}}\n", {"cifar_resnet20": 48, "resnet18": 224}),
])
def test_a_model_runs_at_its_own_size_unless_the_suite_sets_one(extra, expected):
    assert sizes(BASE + extra) == expected


@pytest.mark.parametrize("extra, message", [
    ("image_size: {resnet19: 64}\n", "mixed.yaml:7: field 'image_size.resnet19': unknown model 'resnet19'; allowed: default, "),
    ("image_size: {resnet18: 16}\n", "mixed.yaml:7: field 'image_size.resnet18': must be at least 32, got 16; allowed: 32 to"),
    ("image_size: {resnet18: big}\n", "mixed.yaml:7: field 'image_size.resnet18': expected an integer, got a string 'big'"),
    ("image_size: {}\n", "mixed.yaml:7: field 'image_size': empty mapping"),
    ("image_size: [32]\n", "mixed.yaml:7: field 'image_size': expected an integer, got a list"),
    ("stochastic_depth: 0.5\nimage_sizes: 32\n", "mixed.yaml:8: field 'image_sizes': unknown key; allowed: "),
])
def test_bad_sizes_are_one_line_naming_the_field(extra, message):
    with pytest.raises(spec.SpecError) as e:
        spec.parse(BASE + extra, "mixed.yaml", models.names())
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_mapping_of_sizes_survives_the_run_file_round_trip():
    text = BASE.replace("[inference]", "[training]") + "image_size: {resnet18: 112}\nstochastic_depth: 0.8\n"
    suite = spec.parse(text, "mixed.yaml", models.names())
    again = spec.from_dict(suite.to_dict())
    assert [c.key() for c in again.cases("cpu")] == [c.key() for c in suite.cases("cpu")]
    assert {c.image_size for c in again.cases("cpu")} == {32, 112}
    assert {c.stochastic_depth for c in again.cases("cpu")} == {0.8}


@pytest.mark.parametrize("path", ["suites/paper_depth.yaml", "suites/cifar.yaml"])
def test_the_papers_suites_load_and_their_cpu_profiles_are_small(path):
    suite = spec.load(ROOT / path, models.names())
    gpu, cpu = suite.for_device("cuda").cases("cuda"), suite.for_device("cpu").cases("cpu")
    assert {c.mode for c in gpu} == {"inference", "training"} and len(cpu) <= 30
    assert all(c.batch_size <= 8 and c.image_size <= 64 and c.precision == "fp32" for c in cpu)
    if "cifar" in path:
        assert {c.batch_size for c in gpu} == {1, 32, 128, 512, 1024} and {c.image_size for c in gpu} == {32}
        assert {c.backend for c in gpu if c.mode == "training"} == {"eager"}
    else:  # plain against residual at each depth
        names = set(suite.models)
        assert all(n.replace("plain", "resnet") in names for n in names if "plain" in n)


def test_list_groups_models_by_family_with_their_cost():
    out = subprocess.run([sys.executable, "-m", "rbench.cli", "list"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    order = [text.index(t) for t in ("torchvision ResNet", "ResNet v1 (stride", "CIFAR ResNets (option A", "Wide ResNets",
                                     "ResNeXt-29", "torchvision, other")]
    assert order == sorted(order)
    row = next(line for line in text.splitlines() if "cifar_resnet1202 " in line)
    assert "19.42M" in row and "2.829" in row and "32" in row and "10" in row
    assert "Identity Mappings in Deep Residual Networks" in text
