"""YAML with line numbers: parse a scenario file keeping every node's position, and find the line of a location.

PyYAML's composer keeps a mark on every node; the data is constructed from that same node tree, so a location
in the data (`faults[0].params.latency`) can be followed through the nodes to the line it was written on.
Duplicate keys, which PyYAML silently accepts (the last one wins), are reported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from lab.scenario.variables import Loc


class YamlSyntaxError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class Document:
    data: Any
    root: yaml.Node | None

    def line(self, loc: Loc) -> int:
        """The line of the deepest node the location reaches: a key's line for mapping entries."""
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for el in loc:
            if isinstance(node, yaml.MappingNode):
                pair = _pair(node, el)
                if pair is None:
                    break
                line, node = pair[0].start_mark.line + 1, pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(el, int) and 0 <= el < len(node.value):
                node = node.value[el]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def scalar(self, loc: Loc) -> str | None:
        """The text of the scalar exactly at `loc`, if there is one (for telling templated values apart)."""
        node = self.root
        for el in loc:
            if isinstance(node, yaml.MappingNode):
                pair = _pair(node, el)
                if pair is None:
                    return None
                node = pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(el, int) and 0 <= el < len(node.value):
                node = node.value[el]
            else:
                return None
        return node.value if isinstance(node, yaml.ScalarNode) else None


def _pair(node: yaml.MappingNode, key: Any) -> tuple[yaml.Node, yaml.Node] | None:
    found = None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(key):
            found = (k, v)  # the last one, as in the constructed data
    return found


def _mark_line(exc: yaml.MarkedYAMLError) -> int:
    # Scanner errors ("while scanning a simple key") point their context at the token that went wrong; the
    # problem mark is often the line after. Parser errors are best placed at the problem mark.
    mark = exc.problem_mark
    if exc.context_mark is not None and (exc.context or "").startswith("while scanning"):
        mark = exc.context_mark
    if mark is None:
        mark = exc.context_mark
    return mark.line + 1 if mark is not None else 1


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "invalid YAML"
    if exc.context and problem.startswith("but "):
        return f"{exc.context}, {problem}"
    return f"{problem} ({exc.context})" if exc.context else problem


def parse(text: str) -> Document:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise YamlSyntaxError(_mark_line(exc), _syntax_message(exc)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, str(exc)) from None
    finally:
        loader.dispose()
    return Document(data, root)


def duplicate_keys(root: yaml.Node | None, loc: Loc = (), seen: set[int] | None = None) -> list[tuple[Loc, int, str]]:
    """(location, line, message) for every key written twice in the same mapping."""
    out: list[tuple[Loc, int, str]] = []
    seen = set() if seen is None else seen
    if id(root) in seen:  # an alias: its anchor was checked already
        return out
    seen.add(id(root))
    if isinstance(root, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, v in root.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            line = k.start_mark.line + 1
            if key is not None and key in first:
                out.append(((*loc, key), line, f"duplicate key '{key}' (first at line {first[key]})"))
            elif key is not None:
                first[key] = line
            out.extend(duplicate_keys(v, (*loc, key if key is not None else "?"), seen))
    elif isinstance(root, yaml.SequenceNode):
        for i, item in enumerate(root.value):
            out.extend(duplicate_keys(item, (*loc, i), seen))
    return out
