"""A multi-process case's record, from what its ranks left: per-rank figures, the case's totals, or who failed.

`combine` turns the gathered figures (`result.json`, written by rank 0's program) into the record: global
throughput is every rank's images over the slowest rank's window; latency figures are the slowest rank's;
`ranks` keeps each rank's own. `failure` names the rank that ended a case that did not finish, from the
ranks' state files and torchrun's error summary. `with_scaling` adds the scaling efficiency against the
1-process record of the same key in the same run. No torch here: these are plain dictionaries.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Mapping
from typing import Any

from rbench import results
from rbench.spec import Case, record_id, record_key

# What each rank's entry in `ranks` keeps (the case's totals are computed from these).
RANK_FIELDS = ("rank", "local_rank", "node", "host", "device", "driver", "status", "throughput_ips", "latency_ms",
               "samples_ms", "iters", "window_s", "warmup_iters", "warmup_s", "host_ms_per_iter", "peak_memory_bytes",
               "peak_memory",
               "power", "telemetry", "flags", "allreduce_share", "allreduce_s", "allreduce_buckets", "warnings")


def combine(case: Case, result: Mapping[str, Any]) -> dict[str, Any]:
    """The case's record from every rank's figures (rank order), as rank 0's program gathered them."""
    ranks = sorted(result["ranks"], key=lambda r: r["rank"])
    world = {"world_size": len(ranks), "nnodes": result.get("nnodes", 1)}
    first = ranks[0]
    known = {k: first[k] for k in ("flops_per_image", "params", "gate_error", "gate_tolerance") if k in first}
    if not result.get("holds_rank0", True):
        return results.new_record(case, "skipped", f"measured by {len(ranks)} ranks on {world['nnodes']} nodes; "
                                  f"rank 0's node ({result.get('rank0_host')}) records it in its run file", **world)
    bad = next((r for r in ranks if r.get("status") != "ok"), None)
    if bad is not None:
        return results.new_record(case, bad.get("status", "error"), bad.get("reason", ""), **known, **world,
                                  ranks=[_rank_entry(r) for r in ranks])
    slowest = max(ranks, key=lambda r: r["window_s"])
    fastest = max(ranks, key=lambda r: r["throughput_ips"])
    images = sum(r["iters"] for r in ranks) * case.batch_size
    throughput = images / slowest["window_s"]
    training = case.mode == "training"
    flops = first.get("flops_per_image")
    return results.new_record(
        case, "ok", "", **known, **world,
        throughput_ips=throughput, latency_ms=slowest["latency_ms"], samples_ms=slowest["samples_ms"],
        iters=slowest["iters"], window_s=slowest["window_s"], warmup_iters=slowest["warmup_iters"],
        warmup_s=slowest["warmup_s"], host_ms_per_iter=max((r.get("host_ms_per_iter") or 0) for r in ranks) or None,
        tflops=throughput * flops * (3 if training else 1) / 1e12 if flops else None,
        peak_memory_bytes=max((r["peak_memory_bytes"] or 0) for r in ranks) or None,
        peak_memory=slowest["peak_memory"], power=_power(ranks, images),
        flags={k: True for r in ranks for k, v in (r.get("flags") or {}).items() if v is True},
        warnings=[f"rank {r['rank']}: {w}" for r in ranks for w in r.get("warnings") or []],
        allreduce_share=_mean([r["allreduce_share"] for r in ranks]) if training else 0.0,
        rank_spread={"fastest_rank": fastest["rank"], "fastest_ips": fastest["throughput_ips"],
                     "slowest_rank": min(ranks, key=lambda r: r["throughput_ips"])["rank"],
                     "slowest_ips": min(r["throughput_ips"] for r in ranks),
                     "spread": 1 - min(r["throughput_ips"] for r in ranks) / fastest["throughput_ips"]},
        ranks=[_rank_entry(r) for r in ranks])


def _rank_entry(figures: Mapping[str, Any]) -> dict[str, Any]:
    return {k: figures[k] for k in RANK_FIELDS if k in figures}


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return sum(numbers) / len(numbers) if len(numbers) == len(values) and numbers else None


def _power(ranks: list[Mapping[str, Any]], images: int) -> dict[str, Any]:
    """The ranks' power summed when each rank measured a device of its own; else why not."""
    readings = [r.get("power") or {} for r in ranks]
    if any(p.get("unavailable") or p.get("energy_j") is None for p in readings):
        return {"unavailable": True, "reason": "not every rank measured its energy; see ranks[].power"}
    devices = {(r["host"], (r.get("device") or {}).get("uuid") or (r.get("device") or {}).get("torch_device"))
               for r in ranks}
    if len(devices) < len(ranks):
        return {"unavailable": True, "reason": "ranks share a power domain (one CPU package); see ranks[].power"}
    energy = sum(p["energy_j"] for p in readings)
    return {"avg_w": sum(p.get("avg_w") or 0 for p in readings), "energy_j": energy, "j_per_image": energy / images,
            "source": f"{readings[0].get('source')}, summed over {len(ranks)} ranks"}


def with_scaling(record: dict[str, Any], earlier: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add `scaling_efficiency`: global throughput / (world size x the 1-process throughput of the same key).

    `earlier` is the run file's records; the reference is the latest `ok` 1-process record of this key.
    """
    if record.get("status") != "ok" or not record.get("world_size"):
        return record
    want = record_key({**record, "nproc_per_node": 1})
    ref = None
    for r in earlier:
        if record_key(r) == want and (r.get("world_size") or 1) == 1:
            ref = r
    if ref is None or ref.get("status") != "ok" or not ref.get("throughput_ips"):
        why = "no 1-process record of this case in this run" if ref is None else \
            f"the 1-process case {record_id(ref)} ended {ref.get('status')}"
        return {**record, "scaling_efficiency": None, "scaling_reference": {"unavailable": True, "reason": why}}
    efficiency = record["throughput_ips"] / (record["world_size"] * ref["throughput_ips"])
    return {**record, "scaling_efficiency": efficiency,
            "scaling_reference": {"case_id": record_id(ref), "throughput_ips": ref["throughput_ips"]}}


_FAILURE = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)


def torchrun_failures(log: str) -> dict[int, int]:
    """{rank: exit code} from the error summary torchrun prints when a worker fails (empty if there is none)."""
    summary = log[log.rfind("Failures:"):] if "Failures:" in log else ""
    return {int(r): int(c) for r, c in _FAILURE.findall(summary)}


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def failure(case: Case, states: Mapping[int, Mapping[str, Any]], exits: Mapping[int, int], code: int,
            last_words: str, world_size: int, oom_evidence: str = "") -> dict[str, Any]:
    """The record of a case that did not finish: the rank that ended it, with its reason.

    First a rank that died without a word from a signal other than torchrun's own SIGTERM (killed from
    outside: the OOM killer, a user; `oom` when it was SIGKILL and `oom_evidence`, from
    `rbench.run.isolation.MemoryWatch`, says the OOM killer ran); else the rank whose failure came
    first; else whatever torchrun said.
    """
    world = {"world_size": world_size}
    died = [r for r, c in sorted(exits.items()) if c < 0 and c != -signal.SIGTERM
            and (states.get(r) or {}).get("state") != "failed"]
    failed = sorted((s for s in states.values() if s.get("state") == "failed"), key=lambda s: s.get("time", 0))
    if died:
        rank = died[0]
        where = f" ({states[rank]['host']})" if rank in states else ""
        if exits[rank] == -signal.SIGKILL and oom_evidence:
            return results.new_record(case, "oom", f"rank {rank} of {world_size}{where} was killed (signal SIGKILL) "
                                      f"by the kernel's OOM killer: {oom_evidence}; torchrun stopped the other ranks",
                                      **world)
        return results.new_record(case, "error", f"rank {rank} of {world_size}{where} died ({_how(exits[rank])}) "
                                  "without a word; torchrun stopped the other ranks", **world)
    if failed:
        s = failed[0]
        return results.new_record(case, s.get("status", "error"), f"rank {s['rank']} of {world_size} ({s['host']}): "
                                  f"{s.get('reason', '')}", **world)
    if exits:
        rank = min(exits)
        return results.new_record(case, "error", f"rank {rank} of {world_size} ended with {_how(exits[rank])}: "
                                  f"{last_words}", **world)
    return results.new_record(case, "error", f"torchrun ended with {_how(code)} before the ranks reported: "
                              f"{last_words}", **world)
