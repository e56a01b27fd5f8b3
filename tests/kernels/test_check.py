"""GPU readiness: every kernel and shipped config cross-compiles for sm_80, sm_90 and gfx942 without
spills and, for the conv/GEMM kernels, with tensor-core instructions (`python -m rbench_kernels.check`)."""

import pytest

from rbench_kernels import check


@pytest.fixture(scope="module")
def results() -> list:
    # all CPUs: this is the slowest test here (about a hundred compilations)
    return check.run_check()


def test_every_shipped_config_compiles_without_spills_and_with_tensor_cores(results) -> None:
    table = check.format_table(results)
    failed = [r for r in results if r.problems]
    assert not failed, f"{len(failed)} of {len(results)} compilations failed the check:\n{table}"
    print(table)


def test_the_check_covers_every_config_target_and_kernel(results) -> None:
    from rbench_kernels import add, conv, conv1x1

    seen = {(r.job.kernel, r.job.target, r.job.config) for r in results}
    for target in check.TARGETS:
        for kind, configs in conv.CONFIGS[target].items():
            assert all(("conv", target, c) in seen for c in configs), (target, kind)
        for kind, configs in conv1x1.CONFIGS[target].items():
            assert all(("conv1x1", target, c) in seen for c in configs), (target, kind)
        assert all(("add", target, c) in seen for c in add.CONFIGS[target])
    # tensor cores are demanded of every fp16/bf16/tf32 conv and GEMM job, on every target
    demanded = {(r.job.target, r.job.dtype) for r in results if r.job.needs_tensor_cores}
    assert demanded == {(t, d) for t in check.TARGETS for d in ("fp16", "bf16", "tf32")}


def test_tensor_core_instructions_are_recognised(results) -> None:
    kinds = {r.job.target: r.mma_kind for r in results if r.job.needs_tensor_cores and r.ok}
    assert kinds == {"sm80": "HMMA", "sm90": "HGMMA", "gfx942": "MFMA"}


def test_main_rejects_unknown_names(capsys) -> None:
    with pytest.raises(SystemExit):
        check.main(["--targets", "sm75"])
    assert "unknown target sm75" in capsys.readouterr().err
