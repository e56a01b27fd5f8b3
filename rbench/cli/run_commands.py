"""The commands that measure or look at this machine: `run`, `list`, `env`, `kernels check`."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from rbench.cli.common import UsageError, console, err, say
from rbench.names import printable


class _Signals:
    """SIGINT and SIGTERM during a run: the first stops it (the worker is killed at once; a case that finished
    meanwhile is recorded); any later one while clean-up runs only kills again, so clean-up always ends."""

    def __init__(self, executor: Any):
        self.executor, self.received, self.measured = executor, [], False
        self.previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}

    def __call__(self, signum: int, frame: Any) -> None:
        self.received.append(signal.Signals(signum).name)
        if not self.measured:  # once every case is measured, a signal is only noted: the run ends as it is
            self.executor.interrupt(self.received[0])  # in-process, the first time: raises KeyboardInterrupt here

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _announce(s: Any) -> None:
    p = s.profile
    if s.uses_profile:
        say(f"Running the suite's {s.device.kind} profile (overrides.{s.device.kind} in "
            f"{printable(s.suite.source or 'the suite')}): batch sizes {list(p.batch_sizes)}, precisions "
            f"{list(p.precisions)}, backends {list(p.backends)}, modes {list(p.modes)}", out=console)
    for note in s.notes:
        say(f"warning: {note}")
    if s.resumed:
        say(f"Resuming {s.path}: {len(s.cases) - len(s.todo)} of {len(s.cases)} cases already measured", out=console)
    say(f"{printable(s.suite.name)}: {len(s.todo)} cases on {printable(s.device.name)} ({s.device.kind}); "
        f"results -> {s.path}", out=console)


def _stopped(s: Any, why: str) -> str:
    """Mark the run file interrupted (if the disk lets us) and say how to continue."""
    try:
        s.end("interrupted", why)
    except Exception as e:  # noqa: BLE001 - a run file that cannot take its end line is still resumable
        why += f"; the end line could not be written ({e})"
    return (f"{len(s.records())} finished records are in {s.path}; continue with: rbench run --resume {s.path}")


def _measure(s: Any, executor: Any, signals: _Signals) -> int | None:
    """Run the cases still to do; an exit status if the run stopped early (interrupted, disk full), else None."""
    from rbench import results
    from rbench.console import progress, safe

    try:
        with progress(err) as bar:  # live progress on stderr: `rbench run ... > table.txt` keeps the table
            task = bar.add_task("", total=len(s.todo))
            s.run(executor, on_start=lambda i, c: bar.update(task, description=safe(c.id)),
                  on_done=lambda i, r: bar.advance(task))
    except KeyboardInterrupt as e:
        why = signals.received[0] if signals.received else (str(e) or "KeyboardInterrupt")
        executor.abort()
        say(f"interrupted ({why}): {_stopped(s, why)}")
        return 130
    except results.RunWriteError as e:
        executor.abort()
        raise UsageError(f"rbench run: stopped: {e}; {_stopped(s, f'cannot write: {e.cause}')} "
                         "once the disk has room") from None
    finally:
        signals.measured = True
    return None


def _finish(s: Any, executor: Any, signals: _Signals, strict: bool) -> int:
    """Every case is measured: mark the run complete and show its table."""
    from rbench import results
    from rbench.console import notes, run_table, scaling_table, status_counts

    executor.close()
    try:
        s.end("complete")
    except results.RunWriteError as e:
        raise UsageError(f"rbench run: every case is measured and recorded, but the end line could not be "
                         f"written ({e}); the run file is complete all the same") from None
    records = s.records()
    console.print(run_table(records, title=f"{s.suite.name} on {s.device.name}"))
    if notes(records):
        console.print(notes(records), markup=False, highlight=False)
    if scaling_table(records) is not None:
        console.print(scaling_table(records))
    say(f"{status_counts(records)}\nresults: {s.path}", out=console)
    if signals.received:
        say(f"{signals.received[0]} after the last case: the run is complete")
        return 130
    return 1 if strict and strict_failures(records) else 0


def strict_failures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records `--strict` fails on: any case that did not end ok, unsupported or skipped. A max-batch probe
    that ran out of memory is the search working (its answer record says how the search ended)."""
    return [r for r in records if r["status"] not in ("ok", "unsupported", "skipped")
            and not (r.get("max_batch_probe") and r["status"] == "oom")]


def cmd_run(args: argparse.Namespace) -> int:
    from rbench.run import distributed_launch, isolation, session

    try:
        launch = distributed_launch.Launch.from_args(args)
        if args.resume:
            s = session.resume_session(args.resume, args.filter, launch=launch)
        else:
            s = session.open_session(args.suite, args.out, args.device, args.filter or (), launch=launch)
    except (session.SessionError, distributed_launch.LaunchError) as e:
        raise UsageError(f"rbench run: {e}") from None
    except KeyboardInterrupt:
        say("interrupted before the first case: nothing was measured")
        return 130
    if s.already_complete:
        for note in s.notes:
            say(f"note: {note}")
        say(f"{s.path}: the run is already complete ({len(s.records())} cases, each with a record); "
            "nothing to measure", out=console)
        return 0
    _announce(s)
    executor = (isolation.InProcess(s.device.kind) if args.isolation == "none"
                else isolation.Worker(s.device.kind, s.path.with_suffix(".log")))
    # nproc_per_node > 1: through torchrun (rbench.run.distributed_launch); the rest as before
    executor = distributed_launch.Dispatch(executor, s.device.kind, s.path.with_suffix(".log"), launch, s.records)
    signals = _Signals(executor)
    try:
        return _measure(s, executor, signals) or _finish(s, executor, signals, args.strict)
    finally:
        signals.restore()


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rbench import spec
    from rbench.hw import detect
    from rbench.run import backends

    device = detect.detect(args.device)
    if args.json:
        return _list_json(device)
    console.print(f"[bold]This machine:[/] {device.name} ({device.kind})")
    table = Table("precision", "on this machine", header_style="bold")
    for p in spec.PRECISIONS:
        reason = device.unsupported_precision(p)
        table.add_row(p, f"[dim]unsupported: {reason}[/dim]" if reason else "[green]supported[/green]")
    console.print(table)
    table = Table("backend", "on this machine (inference)", header_style="bold")
    for name, backend in backends.REGISTRY.items():
        probe = spec.Case("resnet50", 1, 224, "fp32", name, "inference", "channels_last", device.kind)
        reason = backend.unsupported(probe, device)
        table.add_row(name, f"[dim]unsupported: {reason}[/dim]" if reason else "[green]supported[/green]")
    console.print(table)
    console.print(f"compile modes: {', '.join(spec.COMPILE_MODES)} (write e.g. compile:max-autotune); "
                  "triton:no-graph launches every kernel from Python instead of replaying one CUDA graph")
    console.print(f"memory formats: {', '.join(spec.MEMORY_FORMATS)}; modes: {', '.join(spec.MODES)}")
    _print_models()
    return 0


def _print_models() -> None:
    """Every model by family (torchvision's ResNets, the papers' networks, torchvision's others) with its cost."""
    from rich.table import Table

    from rbench.run.zoo import catalog

    groups = catalog.groups()
    console.print(f"[bold]models[/] ({sum(len(g.entries) for g in groups)}) by family; GMACs: 10^9 multiply-adds "
                  "per image at 'at px'; suites run a model at its 'default px' unless they set image_size")
    for group in groups:
        console.print(f"[bold]{group.title}[/]: [dim]{group.paper}[/dim]")
        table = Table("model", "params", "GMACs", "at px", "default px", "classes", header_style="bold")
        for e in group.entries:
            table.add_row(e.name, f"{e.params / 1e6:.2f}M", f"{e.gmacs:.3f}", str(e.gmacs_px), str(e.image_size),
                          str(e.num_classes))
        console.print(table)


def _list_json(device: Any) -> int:
    """`rbench list --json`: the same facts as the tables, for programs (null where supported)."""
    import json
    import sys

    from rbench import spec
    from rbench.run import backends, models

    probe = lambda name: spec.Case("resnet50", 1, 224, "fp32", name, "inference", "channels_last", device.kind)  # noqa: E731
    sys.stdout.write(json.dumps({
        "device": {"name": device.name, "kind": device.kind},
        "precisions": {p: {"unsupported": device.unsupported_precision(p)} for p in spec.PRECISIONS},
        "backends": {n: {"unsupported": b.unsupported(probe(n), device)} for n, b in backends.REGISTRY.items()},
        "compile_modes": list(spec.COMPILE_MODES), "backend_modes": {b: list(m) for b, m in spec.BACKEND_MODES.items()},
        "memory_formats": list(spec.MEMORY_FORMATS),
        "modes": list(spec.MODES), "models": models.names(), "families": _families_json()}, indent=2, default=str)
        + "\n")
    return 0


def _families_json() -> list[dict[str, Any]]:
    import dataclasses

    from rbench.run.zoo import catalog

    return [dataclasses.asdict(g) for g in catalog.groups()]


def cmd_env(args: argparse.Namespace) -> int:
    import json
    import sys

    from rbench.hw import detect

    text = json.dumps(detect.environment(detect.detect(args.device)), default=str, indent=2)
    if sys.stdout.isatty():
        console.print_json(text)
    else:  # plain JSON for pipes and files: rich would fold long values at the console's width
        sys.stdout.write(text + "\n")
    return 0


def cmd_kernels_check(args: argparse.Namespace) -> int:
    from rbench_kernels import check

    return check.main(args.extra)


def add_to(sub: Any) -> None:
    """Register these commands on the top-level parser's subparsers."""
    p = sub.add_parser("run", help="run a suite and write a run file under results/")
    p.add_argument("suite", nargs="?", help="suite YAML file, e.g. suites/resnet50_fp16.yaml")
    p.add_argument("--out", default="results", help="directory for the run file (default: ./results)")
    p.add_argument("--resume", metavar="RUNFILE", help="measure only the cases missing from RUNFILE")
    p.add_argument("--device", help="override the suite's device (auto, cuda, rocm, xpu, mps, cpu)")
    p.add_argument("--filter", action="append", metavar="TEXT",
                   help="run only cases whose id contains TEXT (repeatable; others are recorded skipped; "
                        "kept in the run file, so --resume honours it)")
    p.add_argument("--isolation", choices=["process", "none"], default="process",
                   help="process (default): each case in a worker process that a crash or hang cannot take "
                        "down with it; none: in this process")
    p.add_argument("--strict", action="store_true", help="exit 1 if any case ended oom/error/timeout/incorrect/over_budget")
    # Passed through to torchrun for cases with nproc_per_node > 1 (give the same on every node; see README).
    p.add_argument("--nnodes", type=int, default=1, help="torchrun --nnodes: nodes that run each multi-process case")
    p.add_argument("--node-rank", type=int, help="torchrun --node-rank: this node's rank, 0 to NNODES-1")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="torchrun --rdzv-endpoint (c10d rendezvous)")
    p.add_argument("--rdzv-id", help="torchrun --rdzv-id, e.g. $SLURM_JOB_ID (each case adds its own suffix)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="models, backends, precisions, and what this machine supports")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the same as JSON (for programs)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("kernels", help="the Triton kernels: `rbench kernels check` cross-compiles them for GPUs")
    ksub = p.add_subparsers(dest="kernels_command", required=True)
    k = ksub.add_parser("check", add_help=False,
                        help="compile every kernel and config for sm_80, sm_90 and gfx942 on this machine and report "
                             "registers, spills, shared memory and tensor-core use (options: rbench kernels check --help)")
    k.set_defaults(func=cmd_kernels_check, passthrough=True)  # its options are rbench_kernels.check's own

    p = sub.add_parser("env", help="print this machine's environment record (hardware, driver, software)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_env)
