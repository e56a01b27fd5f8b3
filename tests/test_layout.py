"""The house's boundaries, checked from the source: who may import whom, no cycles, one job per module.

The rules (README "Layout", DESIGN.md): `rbench_kernels` never imports `rbench`; inside `rbench`, imports
only go down the rows below (a module may also import lower files of its own folder, in the order
listed); `rbench/analysis` never imports torch, triton, `rbench.hw` or `rbench.run`; nothing in `hw/`
imports `run/` or `analysis/`; the vendor files are imported only by `hw/detect.py`.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rbench"
KERNELS = ROOT / "kernels" / "rbench_kernels"

# Rows, lowest first. Within a row's folder, files may import the files listed before them.
ROWS: list[list[str]] = [
    ["rbench.names", "rbench.files", "rbench.suite_yaml", "rbench.scenario_spec", "rbench.spec", "rbench.results", "rbench.console"],
    ["rbench.analysis.stats", "rbench.analysis.peaks", "rbench.analysis.sources", "rbench.analysis.compare",
     "rbench.analysis.render", "rbench.analysis.*"],
    ["rbench.hw.base", "rbench.hw.sampling", "rbench.hw.host", "rbench.hw.nvidia", "rbench.hw.amd",
     "rbench.hw.intel", "rbench.hw.apple", "rbench.hw.detect"],
    ["rbench.run.*"],
    ["rbench.cli.common", "rbench.cli.*", "rbench.cli", "rbench.pytest_plugin"],
]
VENDOR_FILES = {"rbench.hw.nvidia", "rbench.hw.amd", "rbench.hw.intel", "rbench.hw.apple"}
NO_TORCH = ("torch", "torchvision", "triton", "rbench.hw", "rbench.run", "rbench_kernels")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / ("kernels" if path.is_relative_to(KERNELS) else ".")).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found.update({module_name(p): p for p in KERNELS.rglob("*.py")})
    return found


def imports_of(path: Path, name: str) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports inside functions count)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            # `from rbench.hw import nvidia` imports the module rbench.hw.nvidia
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def internal_imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    return {m for m in imports_of(path, name) if m in known and m != name and not name.startswith(m + ".")}


def rank(name: str) -> tuple[int, int]:
    """(row, position in the row) of a module; a `*` entry stands for the rest of its folder."""
    for r, row in enumerate(ROWS):
        if name in row:
            return r, row.index(name)
        for i, entry in enumerate(row):
            if entry.endswith(".*") and name.startswith(entry[:-1]):
                return r, i
    if name == "rbench":
        return 0, -1
    if name in ("rbench.analysis", "rbench.hw", "rbench.run"):
        return [r for r, row in enumerate(ROWS) if any(e.startswith(name + ".") for e in row)][0], -1
    raise AssertionError(f"{name} is in no row of tests/test_layout.py: add it where it belongs")


def test_every_rbench_module_has_a_place_and_imports_only_downwards():
    known = modules()
    wrong = []
    for name, path in sorted(known.items()):
        if not name.startswith("rbench.") or name.startswith("rbench_kernels"):
            continue
        mine = rank(name)
        for other in internal_imports(name, path, known):
            if other.startswith("rbench_kernels") or other == "rbench":
                continue
            theirs = rank(other)
            same_folder = other.rpartition(".")[0] == name.rpartition(".")[0]
            if theirs[0] > mine[0] or (theirs[0] == mine[0] and same_folder and theirs[1] > mine[1]
                                       and not ROWS[mine[0]][mine[1]].endswith(".*")):
                wrong.append(f"{name} imports {other} (an arrow upwards)")
            if other in VENDOR_FILES and name != "rbench.hw.detect" and not name.startswith("rbench.hw."):
                wrong.append(f"{name} imports the vendor file {other}; ask rbench.hw.detect")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    known = modules()
    graph = {n: internal_imports(n, p, known) for n, p in known.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m] if m in stack else [n, m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    # A package's __init__ importing its own submodules is not a cycle of the design.
    cycles = [c for c in cycles if not all(x.startswith(c[0]) or c[0].startswith(x) for x in c)]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_kernels_never_import_rbench():
    known = modules()
    bad = [f"{n} imports {m}" for n, p in known.items() if n.startswith("rbench_kernels")
           for m in imports_of(p, n) if m == "rbench" or m.startswith("rbench.")]
    assert not bad, bad


def test_analysis_and_results_never_import_torch_or_the_measuring_side():
    known = modules()
    light = [n for n in known if n.startswith("rbench.analysis") or n in ("rbench.results", "rbench.spec",
                                                                          "rbench.names")]
    bad = [f"{n} imports {m}" for n in light for m in imports_of(known[n], n)
           if any(m == x or m.startswith(x + ".") for x in NO_TORCH)]
    assert not bad, bad


def test_analysis_modules_import_where_torch_cannot():
    """A laptop without torch: every analysis module, results and spec import in a process where
    `import torch` (and triton) raises."""
    names = sorted(n for n in modules() if n.startswith("rbench.analysis")) + ["rbench.results", "rbench.spec"]
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'triton'):\n"
        "            raise ImportError(f'{name} is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for n in {names!r}:\n"
        "    __import__(n)\n"
        "assert not any(m.split('.')[0] in ('torch', 'triton') for m in sys.modules), 'torch came in'\n"
        "print('ok', len(sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'kernels'}"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-2000:]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_has_one_job_stated_and_stays_small(path):
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= 450, f"{path.relative_to(ROOT)} has {lines} lines (one job per module: split it)"
    doc = ast.get_docstring(ast.parse(text))
    assert doc and doc.strip().splitlines()[0].strip(), f"{path.relative_to(ROOT)}: no docstring stating its job"
