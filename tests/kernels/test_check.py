"""GPU readiness: every kernel and shipped config cross-compiles for sm_80, sm_90 and gfx942 without
spills, within shared memory, with tensor-core instructions for the conv/GEMM kernels and TMA
instructions for the descriptor kernels on sm_90 (`python -m rbench_kernels.check`)."""

import json

import pytest

from rbench_kernels import check, conv, conv1x1, conv1x1_tma, conv_tma


@pytest.fixture(scope="module")
def results() -> list:
    # all CPUs: this is the slowest test here (about two hundred compilations)
    return check.run_check()


def test_every_shipped_config_passes_the_check(results) -> None:
    table = check.format_table(results)
    failed = [r for r in results if r.problems]
    assert not failed, f"{len(failed)} of {len(results)} compilations failed the check:\n{table}"
    print(table)


def test_the_check_covers_every_config_target_and_kernel(results) -> None:
    from rbench_kernels import add, splitk

    seen = {(r.job.kernel, r.job.target, r.job.config) for r in results}
    modules = {"conv": conv, "conv1x1": conv1x1, "conv_tma": conv_tma, "conv1x1_tma": conv1x1_tma}
    for target in check.TARGETS:
        for name, module in modules.items():
            for kind, configs in module.CONFIGS.get(target, {}).items():
                assert all((name, target, c) in seen for c in configs), (name, target, kind)
        assert all(("add", target, c) in seen for c in add.CONFIGS[target])
        assert ("splitk", target, splitk.CONFIG) in seen
    # tensor cores are demanded of every fp16/bf16/tf32 conv and GEMM job, on every target (the
    # one-byte qconv builds are qconv_check's)
    demanded = {(r.job.target, r.job.dtype) for r in results if r.job.needs_tensor_cores and r.job.kernel != "qconv"}
    assert demanded == {(t, d) for t in check.TARGETS for d in ("fp16", "bf16", "tf32")}
    # split-K builds, the stem padded to 4 channels, both TMA kernels on sm_90
    assert {r.job.kernel for r in results if r.job.split} >= {"conv", "conv1x1", "conv_tma", "conv1x1_tma"}
    assert {r.job.target for r in results if r.job.variant == "stem7x7c4"} == set(check.TARGETS)
    assert {(r.job.kernel, r.job.target) for r in results if r.job.needs_tma} == {
        ("conv_tma", "sm90"), ("conv1x1_tma", "sm90")}


def test_tensor_core_and_tma_instructions_are_recognised(results) -> None:
    kinds = {r.job.target: r.mma_kind for r in results if r.job.needs_tensor_cores and r.ok and r.job.kernel != "qconv"}
    assert kinds == {"sm80": "HMMA", "sm90": "HGMMA", "gfx942": "MFMA"}
    tma = [r for r in results if r.job.needs_tma]
    assert tma and all(r.tma and r.tma >= 3 for r in tma)  # A and B loads and the output store at least
    assert all(r.tma == 0 for r in results if r.job.target == "sm90" and r.job.kernel in ("conv", "conv1x1"))
    assert all(r.tma is None for r in results if r.job.target != "sm90")
    assert all(r.loop for r in results if r.job.needs_tensor_cores and r.job.kernel in ("conv", "conv_tma"))


def test_json_records_carry_mma_and_tma_per_build(results, tmp_path) -> None:
    records = json.loads(json.dumps(check.as_records(results)))
    assert len(records) == len(results)
    assert all({"mma", "tma", "registers", "spill_bytes", "shared_bytes", "loop", "job"} <= set(r) for r in records)
    assert all(r["tma"] for r in records if r["job"]["kernel"] == "conv1x1_tma")


def _result(**kw) -> check.Result:
    job = check.Job("conv1x1_tma", "1x1", "sm90", "fp16", (128, 128, 64, 8, 3))
    base = dict(ok=True, registers=128, spill_bytes=0, shared_bytes=1024, mma=4, mma_kind="HGMMA", tma=8)
    return check.Result(job, **{**base, **kw})


@pytest.mark.parametrize("change, problem", [
    (dict(tma=0), "a TMA kernel without TMA instructions"),
    (dict(spill_bytes=8), "spills 8 bytes"),
    (dict(shared_bytes=240 * 1024), "needs 245760 B shared memory > 232448"),
    (dict(mma=0), "no tensor-core instructions"),
    (dict(ok=False, error="CompilationError: x"), "compile failed: CompilationError: x"),
])
def test_the_rules(change: dict, problem: str) -> None:
    assert check.problems(_result()) == []
    assert check.problems(_result(**change)) == [problem]


@pytest.mark.parametrize("target, dtype, ops, ok", [
    ("gfx942", "fp8", "v_mfma_f32_32x32x16_fp8_fp8", True),
    ("gfx942", "fp8", "v_mfma_f32_32x32x8_f16", False),  # an e4m3fn dot on gfx942: fp16 MFMAs, conversions
    ("gfx942", "int8", "v_mfma_i32_32x32x16_i8", True),
    ("sm90", "fp8", "QGMMA", True),
    ("sm90", "int8", "IGMMA", True),
    ("sm80", "int8", "IMMA", True),
    ("sm90", "fp8", "HGMMA", False),
])
def test_one_byte_builds_must_use_one_byte_tensor_cores(target: str, dtype: str, ops: str, ok: bool) -> None:
    res = check.Result(check.Job("qconv", "3x3", target, dtype, (128, 128, 128, 8, 2)), ok=True, spill_bytes=0,
                       shared_bytes=1024, mma=4, mma_kind="MFMA" if target == "gfx942" else ops, mma_ops=ops)
    assert check.problems(res) == ([] if ok else [f"{dtype} on wider tensor cores ({ops}), not its one-byte MMA"])


def test_main_rejects_unknown_names(capsys) -> None:
    with pytest.raises(SystemExit):
        check.main(["--targets", "sm75"])
    assert "unknown target sm75" in capsys.readouterr().err
