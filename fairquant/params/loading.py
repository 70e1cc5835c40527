"""Reading a params file: YAML with its errors at line and column, duplicate keys refused (``yaml.safe_load`` keeps
the last silently), ``1e-3`` read as the number it is (YAML 1.1 reads it as a string), and where each key sits, so
that a schema error can name its line too."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from fairquant.errors import FairquantError

Positions = dict[tuple, tuple[int, int]]  # a key's path (section, key, ...) -> (line, column), 1-based

_MERGE = "tag:yaml.org,2002:merge"
_SCIENTIFIC = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _ParamsLoader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 and 5E4 as floats (YAML 1.2; 1.1 needs a dot: 1.0e-3)."""


_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", _SCIENTIFIC, list("-+0123456789."))


def _where(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _positions(node: Node, path: tuple, out: Positions, source: str) -> None:
    """Record where every key sits; refuse a key written twice in one mapping."""
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            out.setdefault((*path, index), _where(item))
            _positions(item, (*path, index), out, source)
    if not isinstance(node, MappingNode):
        return
    seen: dict[tuple[str, str], tuple[int, int]] = {}  # this mapping's keys (block or flow: {a: 1, a: 2})
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE or isinstance(key_node, (MappingNode, SequenceNode)):
            continue
        line, column = _where(key_node)
        first = seen.setdefault((key_node.tag, key_node.value), (line, column))
        if first != (line, column):
            inside = f" in '{'.'.join(map(str, path))}'" if path else ""
            at = f"line {first[0]}" + (f", column {first[1]}" if first[0] == line else "")
            raise FairquantError(f"{source}:{line}:{column}: duplicate key '{key_node.value}'{inside} (first at "
                                 f"{at}); YAML would keep only the last one: remove one of them")
        key = (*path, key_node.value)
        out[key] = (line, column)
        _positions(value_node, key, out, source)


def _yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    hint = "indent with spaces, not tabs" if "\\t" in problem or "tab" in problem else \
        "check the indentation and the quoting on that line"
    return f"{where}: not valid YAML ({problem}); {hint}"


def read_params_file(path: Path) -> tuple[dict, Positions]:
    """The params file's mapping and where each key sits; :class:`FairquantError` for a missing, empty or broken file."""
    source = str(path)
    if not path.is_file():
        raise FairquantError(f"{source}: params file not found; run from the project root, where params.yaml is")
    try:
        loader = _ParamsLoader(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise FairquantError(f"{source}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        node = loader.get_single_node()
        positions: Positions = {}
        if node is not None:
            _positions(node, (), positions, source)
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise FairquantError(_yaml_problem(exc, source)) from None
    finally:
        loader.dispose()
    if raw is None:
        raise FairquantError(f"{source} is empty; copy the shipped params.yaml and change what you need (a section "
                             f"left out means its documented default)")
    if not isinstance(raw, dict):
        raise FairquantError(f"{source}: expected a mapping of sections, found {type(raw).__name__}")
    return raw, positions


def position_of(loc: tuple, positions: Positions) -> tuple[int, int] | None:
    """Where the deepest written key of a schema error's location sits, or None (a check across sections)."""
    for end in range(len(loc), 0, -1):
        if tuple(loc[:end]) in positions:
            return positions[tuple(loc[:end])]
    return None
