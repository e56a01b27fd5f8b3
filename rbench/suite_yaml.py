"""Suite YAML read safely: the data and the line of every key and item, refusing what would hang or mislead.

A suite file may come from anyone. PyYAML shares aliased values, but walking them for line numbers
expands every alias: 9 levels of 9 ("billion laughs") is 387 million paths. The walk here stops past
`NODE_BUDGET` nodes or `MAX_DEPTH` levels (which also ends recursive aliases), and refuses a key
given twice in one mapping (YAML would silently keep the last), naming both lines.
"""

from __future__ import annotations

import itertools
from typing import Any

import yaml

NODE_BUDGET = 10_000  # values a suite may expand to through aliases; real suites have a few hundred
MAX_DEPTH = 32  # levels of nesting; real suites have 4 (overrides.cpu.policy.max_s)


class SuiteYamlError(ValueError):
    """YAML that is not a usable suite document; the message is one line starting with `file:line`."""


def dotted(where: tuple) -> str:
    """A path of keys and indices as a person writes it: `overrides.cpu.batch_sizes[1]`."""
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_map(root: yaml.Node, source: str) -> dict[tuple, int]:
    """(path -> 1-based line) for every key and item of a composed document, walked as aliases expand it."""
    lines: dict[tuple, int] = {}
    stack: list[tuple[yaml.Node, tuple]] = [(root, ())]
    for visited in itertools.count():
        if not stack:
            return lines
        node, where = stack.pop()
        if len(where) > MAX_DEPTH:
            raise SuiteYamlError(f"{source}:{node.start_mark.line + 1}: YAML nested more than {MAX_DEPTH} levels "
                                 "deep (a recursive alias?); a suite is a flat mapping of fields")
        if visited > NODE_BUDGET:
            raise SuiteYamlError(f"{source}:{node.start_mark.line + 1}: the suite expands to more than {NODE_BUDGET} "
                                 "values through YAML anchors and aliases (an alias bomb?); write the values out")
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key, value in node.value:
                name, line = key.value if isinstance(key, yaml.ScalarNode) else repr(key.value), key.start_mark.line + 1
                if name in first and name != "<<":
                    raise SuiteYamlError(f"{source}:{line}: field '{dotted(where + (name,))}': duplicate key (first "
                                         f"given on line {first[name]}); give each field once")
                first[name] = lines[where + (name,)] = line
                stack.append((value, where + (name,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[where + (i,)] = item.start_mark.line + 1
                stack.append((item, where + (i,)))
    return lines


def read(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """(the document as Python data, the line of every key and item); `SuiteYamlError` if unusable."""
    try:
        node = yaml.compose(text)
        lines = line_map(node, source) if node else {}
        return yaml.safe_load(text), lines
    except RecursionError:
        raise SuiteYamlError(f"{source}: YAML nested too deeply; a suite is a flat mapping of fields") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SuiteYamlError(f"{where}: YAML syntax error: {problem}") from None
