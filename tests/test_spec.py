"""Suite validation: every kind of bad input gives one line naming the file, the field and what is allowed."""

from pathlib import Path

import pytest

from rbench import spec

MODELS = ["resnet18", "resnet50"]
GOOD = """\
name: t
models: [resnet18]
batch_sizes: [1, 8]
image_size: 64
precisions: [fp32, fp16]
backends: [eager, compile:max-autotune]
modes: [inference, training]
policy: {warmup_iters: 1, min_iters: 3}
overrides:
  cpu: {batch_sizes: [1], precisions: [fp32], policy: {max_s: 5}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


def test_good_suite_expands_to_the_cross_product(tmp_path):
    suite = spec.load(write(tmp_path, GOOD), MODELS)
    cases = suite.cases("cuda")
    assert len(cases) == 1 * 2 * 2 * 2 * 2
    assert {c.backend for c in cases} == {"eager", "compile:max-autotune"}
    assert cases[0].key() == ("resnet18", 1, 64, "fp32", "eager", "inference", "channels_last", 1, None, None)
    assert suite.policy.warmup_iters == 1 and suite.policy.min_iters == 3 and suite.policy.max_s == 30.0


def test_device_override_replaces_fields_and_merges_policy(tmp_path):
    suite = spec.load(write(tmp_path, GOOD), MODELS)
    cpu = suite.for_device("cpu")
    assert cpu.batch_sizes == (1,) and cpu.precisions == ("fp32",)
    assert cpu.policy.max_s == 5 and cpu.policy.min_iters == 3  # merged, not replaced
    assert len(cpu.cases("cpu")) == 1 * 1 * 2 * 2
    assert suite.for_device("cuda") is suite
    assert suite.for_device("rocm") is suite


def test_exclude_removes_matching_cases(tmp_path):
    text = GOOD + "exclude: [{backend: 'compile:max-autotune', mode: training}, {batch_size: [8], precision: fp16}]\n"
    cases = spec.load(write(tmp_path, text), MODELS).cases("cuda")
    assert not [c for c in cases if c.backend.startswith("compile") and c.mode == "training"]
    assert not [c for c in cases if c.batch_size == 8 and c.precision == "fp16"]
    assert len(cases) == 16 - 4 - 4 + 1  # the two rules overlap on one case (bs8, fp16, compile, training)


def test_suite_round_trips_through_a_run_file(tmp_path):
    import json

    suite = spec.load(write(tmp_path, GOOD), MODELS)
    assert spec.from_dict(json.loads(json.dumps(suite.to_dict()))) == suite


@pytest.mark.parametrize("text, expected", [
    ("name: t\nmodels: [resnet18\n", "YAML syntax error"),
    (GOOD + "colour: blue\n", ":11: field 'colour': unknown key; allowed: "),
    (GOOD.replace("image_size: 64", "image_size: big"), ":4: field 'image_size': expected an integer, got a string 'big'"),
    (GOOD.replace("[resnet18]", "[resnet18, resnet9000]"), ":2: field 'models[1]': unknown model 'resnet9000'; allowed: resnet18, resnet50"),
    (GOOD.replace("[fp32, fp16]", "[fp32, fp4]"), ":5: field 'precisions[1]': unknown precision 'fp4'; allowed: fp32, tf32, fp16, bf16, amp_fp16, amp_bf16, int8, fp8"),
    (GOOD.replace("compile:max-autotune", "tensorrt"), ":6: field 'backends[1]': unknown backend 'tensorrt'; allowed: eager, compile, triton, compile:default"),
    (GOOD.replace("compile:max-autotune", "compile:fast"), "field 'backends[1]': unknown backend 'compile:fast'"),
    (GOOD.replace("[1, 8]", "[]"), ":3: field 'batch_sizes': empty list"),
    (GOOD.replace("[1, 8]", "[1, 0]"), ":3: field 'batch_sizes[1]': batch size must be positive, got 0"),
    (GOOD.replace("[1, 8]", "[1, -8]"), "batch size must be positive, got -8"),
    (GOOD.replace("[inference, training]", "[serving]"), "field 'modes[0]': unknown mode 'serving'; allowed: inference, training"),
    (GOOD.replace("{warmup_iters: 1, min_iters: 3}", "{warmup: 1}"), ":8: field 'policy.warmup': unknown key; allowed: warmup_iters"),
    (GOOD.replace("{warmup_iters: 1, min_iters: 3}", "{min_iters: 0}"), "field 'policy.min_iters': must be positive, got 0"),
    (GOOD.replace("  cpu:", "  tpu:"), ":10: field 'overrides.tpu': unknown device kind 'tpu'; allowed: cuda, rocm, xpu, mps, cpu"),
    (GOOD.replace("{batch_sizes: [1]", "{name: x, batch_sizes: [1]"), "field 'overrides.cpu.name': unknown key"),
    (GOOD.replace("[1, 8]", "[1, 8.5]"), "field 'batch_sizes[1]': expected an integer, got a number 8.5"),
    (GOOD.replace("name: t\n", ""), "field 'name': missing required field"),
    ("- just\n- a list\n", "a suite is a YAML mapping of fields"),
    (GOOD + "exclude: [{backend: tensorrt}]\n", "field 'exclude[0].backend': unknown backend 'tensorrt'"),
    (GOOD + "memory_format: nhwc\n", "unknown memory format 'nhwc'; allowed: channels_last, nchw"),
    (GOOD + "modes: [training]\n", ":11: field 'modes': duplicate key (first given on line 7)"),
    (GOOD.replace("  cpu: {batch_sizes: [1],", "  cpu: {batch_sizes: [1], batch_sizes: [2],"),
     ":10: field 'overrides.cpu.batch_sizes': duplicate key (first given on line 10)"),
    (GOOD.replace("[1, 8]", "[1, 100000000000000000000]"),
     "field 'batch_sizes[1]': batch size 100000000000000000000 is too large; allowed: 1 to 1048576"),
    (GOOD.replace("image_size: 64", "image_size: 8193"), "field 'image_size': too large: 8193; allowed: 32 to 8192"),
    (GOOD.replace("{warmup_iters: 1, min_iters: 3}", "{max_s: .inf}"), "field 'policy.max_s': must be finite"),
    (GOOD.replace("{warmup_iters: 1, min_iters: 3}", "{timeout_s: .nan}"), "field 'policy.timeout_s': must be finite"),
    (GOOD.replace("{warmup_iters: 1, min_iters: 3}", "{warmup_s: -.inf}"), "field 'policy.warmup_s': must be finite"),
    (GOOD.replace("{warmup_iters: 1, min_iters: 3}", "{min_iters: 1000000000000}"),
     "field 'policy.min_iters': must be finite and at most 100000000"),
    (GOOD + "exclude: [{mode: inference}, {mode: training}]\n", ":11: field 'exclude': selects no case"),
    (GOOD.replace("policy: {max_s: 5}}", "policy: {max_s: 5}, exclude: [{precision: fp32}]}"),
     ":10: field 'overrides.cpu.exclude': selects no case on cpu"),
    ("[" * 3000 + "]" * 3000 + "\n", "YAML nested too deeply"),
])
def test_bad_suites_name_file_field_and_allowed_values(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(spec.SpecError) as info:
        spec.load(path, MODELS)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message, message


BILLION_LAUGHS = "lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]\n" for i in range(1, 10))


@pytest.mark.parametrize("bomb, expected", [(BILLION_LAUGHS, "the suite expands to more than 10000 values"),
                                           ("loop: &loop [*loop]\n", "YAML nested more than 32 levels deep")])
def test_alias_bombs_fail_at_once_in_bounded_memory(tmp_path, bomb, expected):
    """9 levels of 9 aliases expand to 387 million values (once 525 MB and growing); a recursive alias never ends."""
    import time
    import tracemalloc

    path = write(tmp_path, bomb + GOOD)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(spec.SpecError, match=rf"suite\.yaml:\d+: {expected}"):
            spec.load(path, MODELS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20 and time.perf_counter() - started < 5


def test_missing_file_says_so(tmp_path):
    with pytest.raises(spec.SpecError, match=r"nothere\.yaml: no such suite file"):
        spec.load(tmp_path / "nothere.yaml")


def test_shipped_suites_are_valid():
    from rbench.run import models

    suites = sorted(Path(__file__).parent.parent.joinpath("suites").glob("*.yaml"))
    assert {"resnet50_fp16.yaml", "smoke.yaml", "resnet_family.yaml"} <= {p.name for p in suites}
    for path in suites:
        suite = spec.load(path, models.names())
        for kind in spec.DEVICE_KINDS:
            assert suite.for_device(kind).cases(kind), f"{path.name} has no cases on {kind}"


def test_flagship_covers_what_it_promises():
    from rbench.run import models

    suite = spec.load(Path(__file__).parent.parent / "suites/resnet50_fp16.yaml", models.names())
    assert suite.batch_sizes == (1, 8, 32, 64, 128, 256)
    assert set(suite.backends) == {"eager", "compile", "triton"} and set(suite.modes) == {"inference", "training"}
    assert suite.precisions == ("fp16",)
    triton = [c for c in suite.cases("cuda") if c.backend == "triton"]
    assert len(triton) == 6 and {c.mode for c in triton} == {"inference"}  # the kernels are forward only
