"""The commands that measure or look at this machine: `run`, `list`, `env`, `kernels check`."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from rbench.cli.common import UsageError, console, err


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_run(args: argparse.Namespace) -> int:
    from rbench.console import notes, progress, run_table, scaling_table, status_counts
    from rbench.run import distributed_launch, isolation, session

    try:
        launch = distributed_launch.Launch.from_args(args)
        if args.resume:
            s = session.resume_session(args.resume, args.filter, launch=launch)
        else:
            s = session.open_session(args.suite, args.out, args.device, args.filter or (), launch=launch)
    except (session.SessionError, distributed_launch.LaunchError) as e:
        raise UsageError(str(e)) from None
    p = s.profile
    if s.uses_profile:
        console.print(f"[bold yellow]Running the suite's {s.device.kind} profile[/] (overrides.{s.device.kind} in "
                      f"{s.suite.source or 'the suite'}): batch sizes {list(p.batch_sizes)}, precisions "
                      f"{list(p.precisions)}, backends {list(p.backends)}, modes {list(p.modes)}")
    if s.resumed:
        console.print(f"Resuming {s.path}: {len(s.cases) - len(s.todo)} of {len(s.cases)} cases already measured")
    console.print(f"[bold]{s.suite.name}[/]: {len(s.todo)} cases on {s.device.name} ({s.device.kind}); "
                  f"results -> {s.path}")

    executor = (isolation.InProcess(s.device.kind) if args.isolation == "none"
                else isolation.Worker(s.device.kind, s.path.with_suffix(".log")))
    # nproc_per_node > 1: through torchrun (rbench.run.distributed_launch); the rest as before
    executor = distributed_launch.Dispatch(executor, s.device.kind, s.path.with_suffix(".log"), launch, s.records)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with progress(err) as bar:  # live progress on stderr: `rbench run ... > table.txt` keeps the table
            task = bar.add_task("", total=len(s.todo))
            s.run(executor, on_start=lambda i, c: bar.update(task, description=c.id),
                  on_done=lambda i, r: bar.advance(task))
    except KeyboardInterrupt as e:
        executor.close()
        s.end("interrupted", str(e) or "KeyboardInterrupt")
        err.print(f"interrupted: {len(s.finished)} finished records are in {s.path}; "
                  f"continue with: rbench run --resume {s.path}")
        return 130
    executor.close()
    s.end("complete")
    records = s.records()
    console.print(run_table(records, title=f"{s.suite.name} on {s.device.name}"))
    if notes(records):
        console.print(notes(records), markup=False, highlight=False)
    if scaling_table(records) is not None:
        console.print(scaling_table(records))
    console.print(f"{status_counts(records)}\nresults: {s.path}")
    failed = [r for r in records if r["status"] not in ("ok", "unsupported", "skipped")]
    return 1 if args.strict and failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rbench import spec
    from rbench.hw import detect
    from rbench.run import backends, models

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
    console.print(f"compile modes: {', '.join(spec.COMPILE_MODES)} (write e.g. compile:max-autotune)")
    console.print(f"memory formats: {', '.join(spec.MEMORY_FORMATS)}; modes: {', '.join(spec.MODES)}")
    names = models.names()
    console.print(f"[bold]models[/] ({len(names)}; ResNet family first): {', '.join(names)}")
    return 0


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
        "compile_modes": list(spec.COMPILE_MODES), "memory_formats": list(spec.MEMORY_FORMATS),
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
