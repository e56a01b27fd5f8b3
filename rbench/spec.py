"""The suite schema: typed dataclasses, YAML loading with line-accurate errors, and case expansion.

A suite file is user-facing: its field names are an interface (see README). This module imports no
torch so that suites can be validated, expanded and compared on any machine.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rbench import scenario_spec, suite_yaml

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "amp_fp16", "amp_bf16", "int8", "fp8")
BACKENDS = ("eager", "compile", "triton")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BACKEND_MODES = {"compile": COMPILE_MODES, "triton": ("no-graph",)}  # after a colon: compile:max-autotune
MEMORY_FORMATS = ("channels_last", "nchw")
MODES = ("inference", "training")
DEVICES = ("auto", "cuda", "rocm", "xpu", "mps", "cpu")
# Keys of the per-device `overrides:` block: device kinds as `devices.detect()` names them.
DEVICE_KINDS = ("cuda", "rocm", "xpu", "mps", "cpu")
MAX_NPROC = 1024  # ranks per node in a suite (capped again at the devices present when a run starts)
# Sane bounds: a suite beyond them is a typo (or hostile), and would fail much later and less clearly.
MAX_BATCH_SIZE = 2**20
MAX_IMAGE_SIZE = 8192
MAX_ITERS = 10**8
MAX_SECONDS = 7 * 24 * 3600.0


# What identifies a case across runs (what `rbench compare` matches on), and its id for people. A field
# added later gets a default here, so that records written before it existed keep matching.
KEY_FIELDS = ("model", "batch_size", "image_size", "precision", "backend", "mode", "memory_format", "nproc_per_node", "scenario", "stochastic_depth")
KEY_DEFAULTS: dict[str, Any] = {"nproc_per_node": 1, "scenario": None, "stochastic_depth": None}
# Models' own image sizes where a suite sets none, filled by rbench.run.models; the rest run at DEFAULT_IMAGE_SIZE.
DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZES = 224, {}


def record_key(record: Mapping[str, Any]) -> tuple:
    """The case key of a record (or of `Case.to_dict()`)."""
    return tuple(record.get(f, KEY_DEFAULTS.get(f)) for f in KEY_FIELDS)


def record_id(record: Mapping[str, Any]) -> str:
    """`resnet50/bs32/224px/fp16/compile/inference/channels_last`: the case's id, as the record stores it."""
    if record.get("case_id"):
        return str(record["case_id"])
    r = record
    return (f"{r.get('model')}/bs{r.get('batch_size') or 'max'}/{r.get('image_size')}px/{r.get('precision')}/"
            f"{r.get('backend')}/{r.get('mode')}/{r.get('memory_format')}"
            + (f"/np{r['nproc_per_node']}" if r.get("nproc_per_node", 1) != 1 else "") + (f"/{r['scenario']}" if r.get("scenario") else "")
            + (f"/sd{r['stochastic_depth']:g}" if r.get("stochastic_depth") is not None else ""))


class SpecError(ValueError):
    """A suite that cannot be used; the message is one line naming the file, the field and what is allowed."""


@dataclass(frozen=True)
class Policy:
    """How long each case is measured.

    Warm-up runs until both `warmup_iters` and `warmup_s` are reached (compilation, autotuning and
    cuDNN's algorithm search happen there). The timed window then runs enough iterations for
    `min_iters` and `min_s`; a case whose `min_iters` cannot fit in `max_s` is `over_budget`.
    `timeout_s` bounds the whole case (build, compile, gate, warm-up, timing): past it the case is
    killed and recorded `timeout`.
    """

    warmup_iters: int = 10
    warmup_s: float = 1.0
    min_iters: int = 20
    min_s: float = 2.0
    max_s: float = 30.0
    timeout_s: float = 900.0
    rotate_buffers: int = 0  # input buffers rotated through; 0 = enough to exceed a large L2 cache


@dataclass(frozen=True)
class Case:
    """One measurement, fully identified. `key()` is what `rbench compare` matches on."""

    model: str
    batch_size: int
    image_size: int
    precision: str
    backend: str  # "eager", "triton", "triton:no-graph", "compile" or "compile:<mode>"
    mode: str
    memory_format: str
    device: str
    nproc_per_node: int = 1  # processes (ranks) on this node; > 1 runs through torchrun (rbench.run.distributed)
    scenario: str | None = None  # rbench.scenario_spec: an MLPerf scenario or a max-batch search; None: closed loop
    scenario_settings: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    stochastic_depth: float | None = None  # training only: the last residual block's survival probability

    def key(self) -> tuple:
        return record_key(self.to_dict())

    @property
    def id(self) -> str:
        return record_id(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def backend_name(self) -> str:
        return self.backend.split(":", 1)[0]

    @property
    def backend_mode(self) -> str:
        """What follows the backend's colon (`max-autotune`, `no-graph`), else "default"."""
        return self.backend.partition(":")[2] or "default"

    compile_mode = backend_mode


@dataclass(frozen=True)
class Suite:
    """A validated suite. `for_device(kind)` applies that kind's overrides; `cases()` expands them."""

    name: str
    models: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    precisions: tuple[str, ...]
    backends: tuple[str, ...]
    modes: tuple[str, ...]
    # An integer for every model, or {model: size, default: size}; a model it leaves out runs at its own size.
    image_size: int | Mapping[str, int] | None = None
    memory_format: str = "channels_last"
    device: str = "auto"
    policy: Policy = field(default_factory=Policy)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    threshold: float | None = None  # regression threshold for `rbench compare` (fraction), if set
    exclude: tuple[Mapping[str, Any], ...] = ()  # partial cases to leave out, e.g. {backend: compile, mode: training}
    source: str = ""  # the file it was loaded from
    nproc_per_node: tuple[int, ...] = (1,)  # ranks per node, one device each; innermost, so 1 runs before 2
    scenarios: tuple[str, ...] = ()  # rbench.scenario_spec: MLPerf scenarios (through LoadGen) instead of closed loops
    scenario_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_batch: bool = False  # also search each model x precision x backend x mode's largest batch
    stochastic_depth: float | None = None  # training cases: survival probability of the last residual block

    def for_device(self, kind: str) -> Suite:
        """The suite with the `overrides[kind]` block applied (ROCm falls back to the `cuda` block)."""
        block = self.overrides.get(kind)
        if block is None and kind == "rocm":
            block = self.overrides.get("cuda")
        if not block:
            return self
        changes: dict[str, Any] = {}
        for key, value in block.items():
            if key == "policy":
                changes["policy"] = dataclasses.replace(self.policy, **value)
            elif isinstance(value, list):
                changes[key] = tuple(value)
            else:
                changes[key] = value
        return dataclasses.replace(self, **changes)

    def cases(self, device: str) -> list[Case]:
        """Every case of this suite on `device`, in a stable order (model-major, then batch)."""
        cases = (
            Case(model=m, batch_size=b, image_size=self.image_size, precision=p, backend=be,
                 mode=mo, memory_format=self.memory_format, device=device, nproc_per_node=n)
            for m, b, p, be, mo, n in itertools.product(self.models, self.batch_sizes, self.precisions,
                                                        self.backends, self.modes, self.nproc_per_node)
            if not self.scenarios)
        cases = itertools.chain(cases, (Case(**kw) for kw in scenario_spec.case_fields(self, device)))
        cases = (dataclasses.replace(c, image_size=self.image_size_for(c.model),
                                     stochastic_depth=self.stochastic_depth if c.mode == "training" else None)
                 for c in cases)
        return [c for c in cases if not any(_matches(c, rule) for rule in self.exclude)]

    def image_size_for(self, model: str) -> int:
        """`image_size` if an integer; else its entry for `model` or its `default`; else the model's own."""
        size = self.image_size
        if isinstance(size, Mapping):
            size = size.get(model, size.get("default"))
        return DEFAULT_IMAGE_SIZES.get(model, DEFAULT_IMAGE_SIZE) if size is None else size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["overrides"] = {k: dict(v) for k, v in self.overrides.items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _matches(case: Case, rule: Mapping[str, Any]) -> bool:
    """True when every field the rule names has one of the rule's values in `case`."""
    for key, wanted in rule.items():
        values = wanted if isinstance(wanted, (list, tuple)) else [wanted]
        if getattr(case, key) not in values:
            return False
    return True


_EXCLUDE_KEYS = ("model", "batch_size", "precision", "backend", "mode", "nproc_per_node")
_LIST_FIELDS = {
    "models": str, "batch_sizes": int, "precisions": str, "backends": str, "modes": str, "nproc_per_node": int,
}
_SCALAR_FIELDS = {
    "name": str, "description": str, "image_size": int, "memory_format": str, "device": str,
    "threshold": (int, float), "stochastic_depth": (int, float),
}
_REQUIRED = ("name", "models", "batch_sizes", "precisions", "backends", "modes")
_POLICY_FIELDS = {f.name: f.type for f in dataclasses.fields(Policy)}
_OVERRIDABLE = set(_LIST_FIELDS) | {"image_size", "memory_format", "policy", "exclude"}


def allowed_backend(name: str) -> bool:
    base, _, mode = name.partition(":")
    return base in BACKENDS and (mode == "" or mode in BACKEND_MODES.get(base, ()))


class _Checker:
    """Validates a parsed suite and phrases every problem as `file:line: field: problem; allowed: ...`."""

    def __init__(self, path: str, lines: dict[tuple, int], models: Collection[str] | None):
        self.path = path
        self.lines = lines
        self.models = models

    def fail(self, where: tuple, problem: str, allowed: str | None = None) -> SpecError:
        line = self._line(where)
        field_name = suite_yaml.dotted(where)
        loc = f"{self.path}:{line}" if line else self.path
        msg = f"{loc}: field '{field_name}': {problem}" if field_name else f"{loc}: {problem}"
        if allowed:
            msg += f"; allowed: {allowed}"
        return SpecError(msg)

    def _line(self, where: tuple) -> int | None:
        while where:
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return None

    def check_type(self, where: tuple, value: Any, kind: Any) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = " or ".join(_type_name(k) for k in kinds)
            raise self.fail(where, f"expected {names}, got {_type_name(type(value))} {value!r}")
        return value

    def check_list(self, where: tuple, value: Any, item_kind: type) -> list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value stands for a list of one
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_type_name(type(value))}")
        if not value:
            raise self.fail(where, "empty list; give at least one value")
        for i, item in enumerate(value):
            self.check_type(where + (i,), item, item_kind)
        if len(set(value)) != len(value):
            raise self.fail(where, f"duplicate values in {value!r}")
        return value

    def check_choices(self, where: tuple, values: list, allowed: Collection[str], what: str) -> None:
        for i, v in enumerate(values):
            if v not in allowed:
                raise self.fail(where + (i,), f"unknown {what} {v!r}", ", ".join(allowed))

    def check_fields(self, where: tuple, data: dict, top_level: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            w = where + (key,)
            if key in _LIST_FIELDS:
                out[key] = self.check_list(w, value, _LIST_FIELDS[key])
            elif key == "image_size" and isinstance(value, dict):
                out[key] = self.check_image_sizes(w, value)
            elif key in _SCALAR_FIELDS and (top_level or key in _OVERRIDABLE):
                out[key] = self.check_type(w, value, _SCALAR_FIELDS[key])
            elif key == "policy":
                out[key] = self.check_policy(w, value)
            elif key == "exclude":
                out[key] = self.check_exclude(w, value)
            elif key in scenario_spec.FIELDS:
                out[key] = scenario_spec.check(self, w, key, value)
            elif key == "overrides" and top_level:
                out[key] = self.check_overrides(w, value)
            else:
                allowed = sorted(_LIST_FIELDS) + sorted(_SCALAR_FIELDS) + ["policy", "exclude", "overrides", *scenario_spec.FIELDS]
                if not top_level:
                    allowed = sorted(_OVERRIDABLE) + list(scenario_spec.FIELDS)
                raise self.fail(w, "unknown key", ", ".join(allowed))
        self.check_values(where, out)
        return out

    def check_values(self, where: tuple, out: dict[str, Any]) -> None:
        if "models" in out and self.models is not None:
            self.check_choices(where + ("models",), out["models"], self.models, "model")
        if "precisions" in out:
            self.check_choices(where + ("precisions",), out["precisions"], PRECISIONS, "precision")
        if "modes" in out:
            self.check_choices(where + ("modes",), out["modes"], MODES, "mode")
        if "backends" in out:
            for i, b in enumerate(out["backends"]):
                if not allowed_backend(b):
                    allowed = list(BACKENDS) + [f"{b}:{m}" for b, modes in BACKEND_MODES.items() for m in modes]
                    raise self.fail(where + ("backends", i), f"unknown backend {b!r}", ", ".join(allowed))
        for i, n in enumerate(out.get("nproc_per_node", [])):
            if not 1 <= n <= MAX_NPROC:
                raise self.fail(where + ("nproc_per_node", i), f"processes per node out of range: {n}", f"1 to {MAX_NPROC}")
        for i, b in enumerate(out.get("batch_sizes", [])):
            if b <= 0:
                raise self.fail(where + ("batch_sizes", i), f"batch size must be positive, got {b}")
            if b > MAX_BATCH_SIZE:
                raise self.fail(where + ("batch_sizes", i), f"batch size {b} is too large", f"1 to {MAX_BATCH_SIZE}")
        sizes = out.get("image_size", {})
        for name, size in sizes.items() if isinstance(sizes, dict) else [(None, sizes)]:
            w = where + ("image_size",) + (() if name is None else (name,))
            if not 32 <= size <= MAX_IMAGE_SIZE:
                raise self.fail(w, f"must be at least 32, got {size}" if size < 32 else f"too large: {size}",
                                f"32 to {MAX_IMAGE_SIZE}")
        if "stochastic_depth" in out and not 0 < out["stochastic_depth"] <= 1:
            raise self.fail(where + ("stochastic_depth",), f"must be the last residual block's survival probability, "
                            f"got {out['stochastic_depth']}", "a number in (0, 1], e.g. 0.5; leave it out for none")
        if "memory_format" in out and out["memory_format"] not in MEMORY_FORMATS:
            raise self.fail(where + ("memory_format",), f"unknown memory format {out['memory_format']!r}",
                            ", ".join(MEMORY_FORMATS))
        if "device" in out and out["device"] not in DEVICES:
            raise self.fail(where + ("device",), f"unknown device {out['device']!r}", ", ".join(DEVICES))
        if "threshold" in out and not 0 < out["threshold"] < 1:
            raise self.fail(where + ("threshold",), f"must be a fraction in (0, 1), got {out['threshold']}")

    def check_image_sizes(self, where: tuple, value: dict) -> dict[str, int]:
        """`{model: size, default: size}`: known model names (or `default`) to integers."""
        if not value:
            raise self.fail(where, "empty mapping; give an integer, or sizes such as {cifar_resnet20: 32, default: 224}")
        for name, size in value.items():
            if name != "default" and self.models is not None and name not in self.models:
                raise self.fail(where + (name,), f"unknown model {name!r}", "default, " + ", ".join(self.models))
            self.check_type(where + (name,), size, int)
        return value

    def check_policy(self, where: tuple, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_type_name(type(value))}")
        out = {}
        for key, v in value.items():
            if key not in _POLICY_FIELDS:
                raise self.fail(where + (key,), "unknown key", ", ".join(_POLICY_FIELDS))
            integer = _POLICY_FIELDS[key] == "int"
            self.check_type(where + (key,), v, int if integer else (int, float))
            top = f"{MAX_ITERS}" if integer else f"{MAX_SECONDS:g} seconds"
            positive = key in ("min_iters", "max_s", "timeout_s")
            if not math.isfinite(v) or v > (MAX_ITERS if integer else MAX_SECONDS):
                raise self.fail(where + (key,), f"must be finite and at most {top}, got {v}",
                                f"{'> 0' if positive else '>= 0'} and <= {top}")
            if v < 0 or (v == 0 and positive):
                raise self.fail(where + (key,), f"must be positive, got {v}")
            out[key] = v
        return out

    def check_exclude(self, where: tuple, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of partial cases, got {_type_name(type(value))}")
        out = []
        for i, rule in enumerate(value):
            w = where + (i,)
            if not isinstance(rule, dict) or not rule:
                raise self.fail(w, "expected a non-empty mapping such as {backend: compile, mode: training}")
            for key, wanted in rule.items():
                if key not in _EXCLUDE_KEYS:
                    raise self.fail(w + (key,), "unknown key", ", ".join(_EXCLUDE_KEYS))
                values = wanted if isinstance(wanted, list) else [wanted]
                choices = {"precision": PRECISIONS, "mode": MODES}.get(key)
                for v in values:
                    if choices and v not in choices:
                        raise self.fail(w + (key,), f"unknown {key} {v!r}", ", ".join(choices))
                    if key == "backend" and not allowed_backend(v):
                        raise self.fail(w + (key,), f"unknown backend {v!r}", ", ".join(BACKENDS))
            out.append(rule)
        return out

    def check_overrides(self, where: tuple, value: Any) -> dict[str, dict]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping of device kind to fields, got {_type_name(type(value))}")
        out = {}
        for kind, block in value.items():
            if kind not in DEVICE_KINDS:
                raise self.fail(where + (kind,), f"unknown device kind {kind!r}", ", ".join(DEVICE_KINDS))
            if not isinstance(block, dict):
                raise self.fail(where + (kind,), f"expected a mapping, got {_type_name(type(block))}")
            out[kind] = self.check_fields(where + (kind,), block, top_level=False)
        return out


def _type_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping",
            bool: "a boolean", type(None): "nothing"}.get(kind, getattr(kind, "__name__", str(kind)))


def parse(text: str, source: str = "<suite>", models: Collection[str] | None = None) -> Suite:
    """Validate suite YAML text. `models`, when given, is the set of known model names."""
    try:
        data, lines = suite_yaml.read(text, source)
    except suite_yaml.SuiteYamlError as e:
        raise SpecError(str(e)) from None
    checker = _Checker(source, lines, models)
    if not isinstance(data, dict):
        raise checker.fail((), f"a suite is a YAML mapping of fields, got {_type_name(type(data))}")
    for key in data:
        if not isinstance(key, str):
            raise checker.fail((), f"field names are strings, got {key!r}")
    fields = checker.check_fields((), data, top_level=True)
    for key in _REQUIRED:
        if key not in fields:
            raise checker.fail((key,), "missing required field", ", ".join(_REQUIRED))
    policy = Policy(**fields.pop("policy", {}))
    tuples = {k: tuple(v) for k, v in fields.items() if isinstance(v, list)}
    if "overrides" in fields:
        fields["overrides"] = {k: {**b, **({"exclude": tuple(b["exclude"])} if "exclude" in b else {})}
                               for k, b in fields["overrides"].items()}
    suite = Suite(**{**fields, **tuples, "policy": policy, "source": source})
    for kind in ("", *suite.overrides):
        if not (suite.for_device(kind) if kind else suite).cases(kind or "cpu"):
            where = ("overrides", kind) if kind else ()
            block = suite.overrides.get(kind, {}) if kind else fields
            raise checker.fail(where + ("exclude",) if "exclude" in block else where,
                               f"selects no case{f' on {kind}' if kind else ''}: `exclude` removes every combination",
                               "an exclude that leaves at least one case")
    return suite


def load(path: str | Path, models: Collection[str] | None = None) -> Suite:
    """Read and validate a suite file; every problem raises `SpecError` with a one-line message."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such suite file" + ("" if p.suffix else " (suites are YAML files, e.g. suites/smoke.yaml)"))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read: {e}") from None
    return parse(text, str(path), models)


def from_dict(data: Mapping[str, Any]) -> Suite:
    """Rebuild a suite stored in a run file (for `--resume`): the same checks as a file."""
    source = data.get("source") or "<run file suite>"
    data = {k: v for k, v in data.items() if k != "source" and v is not None}
    return parse(yaml.safe_dump(dict(data), sort_keys=False), source)
