"""How every convolution kernel is launched: which config (autotuned, or one), M buckets, split-K, grids.

A launch computes an (N·P·Q) x K output (a `Problem`).  On a GPU it autotunes over the configs
shipped for the device's family and the launch's ConfigKind, with one autotuner per M bucket
(next power of two of N·P·Q), so batch 1 and batch 256 of a layer tune separately.  A launch with
fewer 128x128 output tiles than the device has multiprocessors is *small*: it takes the SMALL
configs (fp16/bf16) and splits its reduction S ways so that tiles x S fills at least one wave;
the fp32 partials are summed by `splitk.py`, which then runs the epilogue.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton

from . import splitk
from ._common import FAMILIES, interpreting
from ._device import Target, device_context, target
from ._gemm import ConfigKind, ConfigRows, Epilogue

# Under TRITON_INTERPRET=1 there is no autotuner (it needs a driver): one fixed config.  The
# interpreter pays per operation, not per element, so large tiles (few programs, few loop trips) run
# fastest; the tests' channel counts still straddle these blocks.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}

# RBENCH_KERNELS_ONE_CONFIG=1: on a GPU, launch the first shipped config that suits the problem
# instead of autotuning (quick GPU tests, debugging); read at each launch.
ONE_CONFIG_ENV = "RBENCH_KERNELS_ONE_CONFIG"

# a launch is small when it has fewer WAVE_TILE x WAVE_TILE output tiles than the device has SMs
WAVE_TILE = 128
# at most this many splits: partial traffic and the second pass grow with S
MAX_SPLIT = 64


def one_config() -> bool:
    """True when RBENCH_KERNELS_ONE_CONFIG asks for one config instead of autotuning."""
    return os.environ.get(ONE_CONFIG_ENV, "").strip().lower() in ("1", "true", "on", "yes")


@dataclass(frozen=True)
class Problem:
    """An (N·P·Q) x K output whose reduction runs over `taps` taps of `channels` channels each.

    `flat`: the kernel flattens (tap, channel) into one reduction index (the stem's taps); else it
    loops over taps x channel blocks."""

    n: int
    p: int
    q: int
    k: int
    channels: int
    taps: int = 1
    flat: bool = False

    @property
    def rows(self) -> int:
        return self.n * self.p * self.q

    @property
    def reduction(self) -> int:
        return self.taps * self.channels

    def steps(self, block_k: int) -> int:
        """The kernel's reduction loop trips (a lower bound for grouped tiles, which span more channels)."""
        if self.flat:
            return triton.cdiv(self.reduction, block_k)
        return self.taps * triton.cdiv(self.channels, block_k)

    def small(self, sms: int) -> bool:
        """Fewer 128x128 output tiles than one wave: split-K territory."""
        return triton.cdiv(self.rows, WAVE_TILE) * triton.cdiv(self.k, WAVE_TILE) < sms


class Tiling:
    """How a kernel maps a config to programs; this default: BLOCK_M consecutive rows per tile.

    Kernels with other tiles (`conv_tma.py`'s (p, q) boxes) override `row_tiles`, and `extra` adds
    the constexprs a launch derives from the problem (its box width), `suits` rules configs out.
    """

    def row_tiles(self, pr: Problem, cfg: dict) -> int:
        return triton.cdiv(pr.rows, cfg["BLOCK_M"])

    def extra(self, pr: Problem, cfg: dict) -> dict:
        return {}

    def suits(self, pr: Problem, cfg: dict) -> bool:
        """Whether the config's tiles suit the problem at all (pruned otherwise, unless none does)."""
        return True

    def tiles(self, pr: Problem, cfg: dict) -> int:
        return self.row_tiles(pr, cfg) * triton.cdiv(pr.k, cfg["BLOCK_N"])

    def splits(self, pr: Problem, cfg: dict, sms: int) -> int:
        """How many ways a small launch splits its reduction: enough for a wave, at least one step each."""
        if not pr.small(sms):
            return 1
        return max(1, min(triton.cdiv(sms, self.tiles(pr, cfg)), pr.steps(cfg["BLOCK_K"]), MAX_SPLIT))


def make_configs(rows: Sequence[tuple[int, ...]], group_m: int = 8) -> list[triton.Config]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) rows as triton.Configs."""
    return [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}, num_warps=w, num_stages=s
        )
        for bm, bn, bk, w, s in rows
    ]


def prune_gemm_configs(configs: list[triton.Config], m: int, n: int, reduction: int) -> list[triton.Config]:
    """Drop configs whose tiles are far larger than the problem; keep at least one."""
    limit_m = max(64, triton.next_power_of_2(m))
    limit_n = max(64, triton.next_power_of_2(n))
    limit_k = max(32, triton.next_power_of_2(reduction))
    kept = [
        c
        for c in configs
        if c.kwargs["BLOCK_M"] <= limit_m and c.kwargs["BLOCK_N"] <= limit_n and c.kwargs["BLOCK_K"] <= limit_k
    ]
    if kept:
        return kept
    return [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"])]


class GemmLauncher:
    """The launch path of one kernel (see the module docstring).

    `configs[family][kind]`: the shipped config rows; `key`: the autotune key (the layer's geometry,
    never the batch: M buckets stand for it); `problem(named_args)`: the Problem of a launch from
    the kernel's named arguments.  `persistent` kernels loop over tiles with a stride of their grid,
    which is then at most one program per SM.  Every kernel takes a SPLIT_K constexpr and finishes
    a tile with `_gemm.bn_act_store` (or its own descriptor epilogue when not splitting).
    """

    def __init__(self, kernel: Any, configs: ConfigRows, key: list[str], problem: Callable[[dict], Problem], *,
                 families: Sequence[str] = FAMILIES, persistent: bool = False, tiling: Tiling | None = None) -> None:
        # kernel: a @triton.jit function (an InterpretedFunction when interpreting)
        if set(configs) != set(families) or any(not set(kinds) <= set(ConfigKind) for kinds in configs.values()):
            raise ValueError(f"configs must map each of {tuple(families)} to lists keyed by ConfigKind")
        self.kernel, self.configs, self.key, self.problem = kernel, configs, key, problem
        self.persistent, self.tiling = persistent, tiling or Tiling()
        self._tuned: dict[tuple, triton.runtime.Autotuner] = {}

    def kind_for(self, family: str, kind: ConfigKind, small: bool) -> ConfigKind:
        """SMALL configs for a small fp16/bf16 launch, where the family ships them."""
        if small and kind is ConfigKind.HALF and ConfigKind.SMALL in self.configs[family]:
            return ConfigKind.SMALL
        return kind

    def prune(self, configs: list[triton.Config], pr: Problem, sms: int) -> list[triton.Config]:
        """Configs that suit the problem, with their derived constexprs (Tiling.extra).

        Tiles far larger than the problem go; in a small launch so do configs that cannot reach a
        wave of programs even split, while any config can."""
        kept = prune_gemm_configs(configs, pr.rows, pr.k, pr.reduction)
        kept = [c for c in kept if self.tiling.suits(pr, c.kwargs)] or kept
        kept = [triton.Config({**c.kwargs, **self.tiling.extra(pr, c.kwargs)}, num_warps=c.num_warps,
                              num_stages=c.num_stages) for c in kept]
        if pr.small(sms):
            full = [c for c in kept if self.tiling.tiles(pr, c.kwargs) * self.tiling.splits(pr, c.kwargs, sms) >= sms]
            kept = full or kept
        return kept

    def candidates(self, pr: Problem, family: str, kind: ConfigKind, sms: int) -> list[tuple[dict, tuple[int, int]]]:
        """(config kwargs, grid) of every config the autotuner would time for this problem."""
        kind = self.kind_for(family, kind, pr.small(sms))
        return [(c.kwargs, self.grid(pr, c.kwargs, sms)) for c in self.prune(make_configs(self.configs[family][kind]),
                                                                             pr, sms)]

    def grid(self, pr: Problem, cfg: dict, sms: int) -> tuple[int, int]:
        """(tile programs, splits); persistent kernels get at most one tile program per SM."""
        tiles = self.tiling.tiles(pr, cfg)
        return (min(tiles, sms) if self.persistent else tiles), self.tiling.splits(pr, cfg, sms)

    def tuned(self, family: str, kind: ConfigKind, bucket: int, sms: int) -> triton.runtime.Autotuner:
        """The autotuned kernel for a family, config kind, M bucket and SM count."""
        ident = (family, kind, bucket, sms)
        if ident not in self._tuned:
            def prune(configs, named_args, **kwargs):
                return self.prune(configs, self.problem({**named_args, **kwargs}), sms)

            self._tuned[ident] = triton.autotune(
                configs=make_configs(self.configs[family][kind]), key=self.key,
                prune_configs_by={"early_config_prune": prune},
            )(self.kernel)
        return self._tuned[ident]

    def __call__(self, operands: tuple, sizes: tuple, ep: Epilogue, meta: dict, *, kind: ConfigKind,
                 device: torch.device, before: Callable[[], None] | None = None) -> None:
        """Launch over ep.y: kernel(*operands, *ep.args(part), *sizes, **meta, SPLIT_K=..., **config).

        `before` runs just before a GPU launch (e.g. `_device.ensure_allocator`)."""
        n, k, p, q = ep.shape
        if n * p * q == 0 or k == 0:
            return
        tgt = target(device)
        named = {**dict(zip(self.kernel.arg_names, (*operands, *ep.args(None), *sizes))), **meta}
        pr = self.problem(named)
        small = pr.small(tgt.sms)
        meta = {**meta, "SPLIT_K": small}
        if interpreting() or one_config():
            splits = self._fixed(operands, sizes, ep, meta, pr, tgt, kind, small, before)
        else:
            splits = self._autotuned(operands, sizes, ep, meta, pr, tgt, kind, small, before)
        if splits:
            self._reduce(*splits, ep, meta, device)

    def _partials(self, splits: int, ep: Epilogue, small: bool) -> torch.Tensor | None:
        n, k, p, q = ep.shape
        return torch.empty((splits, n * p * q, k), dtype=torch.float32, device=ep.y.device) if small else None

    def _fixed(self, operands, sizes, ep, meta, pr, tgt: Target, kind, small, before):
        """One config: the interpreter's, or (RBENCH_KERNELS_ONE_CONFIG) the first shipped one that suits."""
        if interpreting():
            cfg = self.prune(make_configs([tuple(INTERPRETER_CONFIG[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
                                           + (4, 1)]), pr, tgt.sms)[0]
            launch = dict(cfg.kwargs)
        else:
            family = tgt.require_family()
            cfg = self.prune(make_configs(self.configs[family][self.kind_for(family, kind, small)]), pr, tgt.sms)[0]
            launch = cfg.all_kwargs()
        grid = self.grid(pr, cfg.kwargs, tgt.sms)
        part = self._partials(grid[1], ep, small)
        with device_context(ep.y.device):
            if before is not None and not interpreting():
                before()
            self.kernel[grid](*operands, *ep.args(part), *sizes, **meta, **launch)
        return (part, grid[1]) if small else None

    def _autotuned(self, operands, sizes, ep, meta, pr, tgt: Target, kind, small, before):
        family = tgt.require_family()  # UnsupportedTarget where no configs are shipped
        kind = self.kind_for(family, kind, small)
        tuned = self.tuned(family, kind, triton.next_power_of_2(pr.rows), tgt.sms)
        # room for the most splits any config of the kind takes; the autotuner picks one of them
        most = max(self.tiling.splits(pr, c.kwargs, tgt.sms) for c in make_configs(self.configs[family][kind]))
        part = self._partials(most, ep, small)
        with device_context(ep.y.device):
            if before is not None:
                before()
            tuned[lambda m: self.grid(pr, m, tgt.sms)](*operands, *ep.args(part), *sizes, **meta)
        return (part, self.grid(pr, tuned.best_config.kwargs, tgt.sms)[1]) if small else None

    def _reduce(self, part: torch.Tensor, splits: int, ep: Epilogue, meta: dict, device: torch.device) -> None:
        """Split-K's second pass (splitk.py) over the first `splits` partials."""
        n, k, p, q = ep.shape
        bm, bn, warps = splitk.CONFIG
        launch = {"BLOCK_M": bm, "BLOCK_N": bn}
        if not interpreting():
            launch["num_warps"] = warps
        with device_context(device):
            splitk.splitk_reduce_kernel[splitk.reduce_grid(n * p * q, k)](
                part, splits, *ep.args(None), n, k, p, q,
                HAS_RESIDUAL=meta["HAS_RESIDUAL"], RELU=meta["RELU"], **launch,
            )
