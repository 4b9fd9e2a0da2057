"""YAML with line numbers and limits: parse a scenario's text into nodes that keep their position, and find the
line of a location.

The node tree is composed here from the parser's events (libyaml's when PyYAML has it, which is fast enough for a
1 MiB file) rather than by PyYAML's composer, because that is where a hostile file is stopped before anything
walks its data:
- nesting deeper than MAX_DEPTH, more than MAX_VALUES values (an alias counts as everything it stands for, so
  an "alias bomb" of a dozen lines that stands for 10^8 strings is refused at the alias that crosses the limit),
  more than MAX_ALIASES alias uses, and an alias used inside its own anchor (a structure containing itself);
- explicit tags other than `!!str` (`!!python/...`, `!!timestamp`, `!!binary`, `!!int 'abc'` ...): the format
  needs none;
- plain scalars that resolve to numbers are checked here (at most 32 characters, whole numbers within
  ±(2^63 - 1), `0x_` is no number), and dates (`2024-02-30`) stay strings: no field of a scenario is a date.
Each refusal names the line and the field (`title`, `faults[0].params`) it was met at.

PyYAML's constructor then builds the data from that node tree, so a location in the data
(`faults[0].params.latency`) can be followed through the nodes to the line it was written on. Duplicate keys,
which PyYAML silently accepts (the last one wins), are reported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from lab.scenario.variables import Loc

try:  # libyaml's parser: ~10x faster than the pure-Python one, which is kept as a fallback
    from yaml._yaml import CParser as _FastParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _FastParser = None

MAX_DEPTH = 32  # nested mappings/lists; the catalog's deepest is 8
MAX_VALUES = 5_000  # values (keys included) in a file, aliases counted as what they stand for; the catalog: 547
MAX_ALIASES = 100  # uses of `*anchor`
MAX_NUMBER_CHARS = 32  # the text of a number (int() of a 5,000-digit string is refused by Python itself)
MAX_INT = 2**63 - 1

_YAML = "tag:yaml.org,2002:"
ALLOWED_TAGS = {f"{_YAML}str"}
_AS_STRING = {f"{_YAML}timestamp", f"{_YAML}value"}  # implicit dates and `=` are read as the text written


class YamlSyntaxError(Exception):
    """A text that is not a scenario's YAML; `field` is where it was met (`<yaml>` when no field can be named)."""

    def __init__(self, line: int, message: str, field: str = "<yaml>"):
        super().__init__(message)
        self.line = line
        self.message = message
        self.field = field


@dataclass
class Document:
    data: Any
    root: yaml.Node | None
    _keys: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = field(default_factory=dict, repr=False)

    def line(self, loc: Loc) -> int:
        """The line of the deepest node the location reaches: a key's line for mapping entries."""
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for el in loc:
            if isinstance(node, yaml.MappingNode):
                pair = self._pair(node, el)
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
                pair = self._pair(node, el)
                if pair is None:
                    return None
                node = pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(el, int) and 0 <= el < len(node.value):
                node = node.value[el]
            else:
                return None
        return node.value if isinstance(node, yaml.ScalarNode) else None

    def _pair(self, node: yaml.MappingNode, key: Any) -> tuple[yaml.Node, yaml.Node] | None:
        # An index per mapping, built on first use: a file with thousands of problems looks up thousands of keys.
        index = self._keys.get(id(node))
        if index is None:
            index = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    index[k.value] = (k, v)  # the last one, as in the constructed data
            self._keys[id(node)] = index
        return index.get(str(key))


def _mark_line(exc: yaml.MarkedYAMLError) -> int:
    # Scanner errors ("while scanning a simple key") point their context at the token that went wrong; the
    # problem mark is often the line after. Parser errors are best placed at the problem mark.
    mark = exc.problem_mark
    if exc.context_mark is not None and (exc.context or "").startswith("while scanning"):
        mark = exc.context_mark
    if mark is None:
        mark = exc.context_mark
    return mark.line + 1 if mark is not None else 1


def _found_tab(exc: yaml.MarkedYAMLError, text: str) -> bool:
    """Whether the scanner stopped at a tab (libyaml's message does not even name the character)."""
    mark = exc.problem_mark
    if mark is None or not (exc.problem or "").startswith("found character"):
        return False
    lines = text.split("\n")
    return mark.line < len(lines) and lines[mark.line][mark.column:mark.column + 1] == "\t"


def _syntax_message(exc: yaml.MarkedYAMLError, text: str = "") -> str:
    problem = exc.problem or "invalid YAML"
    if exc.problem_mark is not None and _found_tab(exc, text):
        return f"a tab at column {exc.problem_mark.column + 1}: YAML indents with spaces, never tabs"
    if exc.context and problem.startswith("but "):
        return f"{exc.context}, {problem}"
    return f"{problem} ({exc.context})" if exc.context else problem


def _shown_tag(tag: str) -> str:
    return f"!!{tag[len(_YAML):]}" if tag.startswith(_YAML) else tag


def _where(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<yaml>"


@dataclass
class _Open:
    """A mapping or list whose items are still being read."""

    node: yaml.CollectionNode
    loc: Loc
    anchor: str | None
    size: int = 1  # values it stands for, itself included
    key: yaml.Node | None = None  # a mapping's key waiting for its value


_RESOLVER = yaml.resolver.Resolver()
_NUMBERS = yaml.constructor.SafeConstructor()  # only its stateless int/float conversions are used


class _Composer:
    """Builds the node tree from parser events without recursion, enforcing the limits as it goes."""

    def __init__(self, parser: Any):
        self.parser = parser
        self.anchors: dict[str, yaml.Node] = {}
        self.sizes: dict[int, int] = {}  # id(anchored node) -> values it stands for
        self.open_anchors: set[str] = set()
        self.values = 0
        self.aliases = 0

    def document(self) -> yaml.Node | None:
        p = self.parser
        p.get_event()  # StreamStartEvent
        if p.check_event(StreamEndEvent):
            return None
        start = p.get_event()
        assert isinstance(start, DocumentStartEvent)
        root = self.tree()
        p.get_event()  # DocumentEndEvent
        if not p.check_event(StreamEndEvent):
            extra = p.get_event()
            raise YamlSyntaxError(extra.start_mark.line + 1,
                                  "expected a single document in the stream, but found another document")
        return root

    def tree(self) -> yaml.Node:
        stack: list[_Open] = []
        while True:
            event = self.parser.get_event()
            if isinstance(event, (SequenceEndEvent, MappingEndEvent)):
                done = stack.pop()
                done.node.end_mark = event.end_mark
                if done.anchor is not None:
                    self.open_anchors.discard(done.anchor)
                    self.sizes[id(done.node)] = done.size
                node, size = done.node, done.size
            else:
                loc = _child_loc(stack)
                if isinstance(event, AliasEvent):
                    node = self._alias(event, loc)
                    size = self.sizes[id(node)]
                elif isinstance(event, ScalarEvent):
                    node, size = self._scalar(event, loc), 1
                else:
                    stack.append(self._collection(event, loc, depth=len(stack) + 1))
                    continue
            if not stack:
                return node
            parent = stack[-1]
            parent.size += size
            if isinstance(parent.node, yaml.SequenceNode):
                parent.node.value.append(node)
            elif parent.key is None:
                parent.key = node
            else:
                parent.node.value.append((parent.key, node))
                parent.key = None

    def _count(self, n: int, event: Any, loc: Loc, what: str) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            raise YamlSyntaxError(event.start_mark.line + 1,
                                  f"{what} takes the file past {MAX_VALUES:,} values (aliases count as all they "
                                  f"stand for); a scenario file may have at most {MAX_VALUES:,}", _where(loc))

    def _anchor(self, event: Any, node: yaml.Node, loc: Loc) -> None:
        anchor = event.anchor
        if anchor is None:
            return
        if anchor in self.anchors:
            first = self.anchors[anchor].start_mark.line + 1
            raise YamlSyntaxError(event.start_mark.line + 1, f"anchor &{anchor} is defined twice (first at line "
                                  f"{first})", _where(loc))
        self.anchors[anchor] = node

    def _tag(self, event: Any, kind: type[yaml.Node], value: str | None, loc: Loc) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _RESOLVER.resolve(kind, value, event.implicit)
            return f"{_YAML}str" if tag in _AS_STRING else tag
        if tag not in ALLOWED_TAGS or kind is not yaml.ScalarNode:
            raise YamlSyntaxError(event.start_mark.line + 1, f"YAML tag {_shown_tag(tag)} is not allowed in a "
                                  "scenario file (the only tag allowed is !!str)", _where(loc))
        return tag

    def _alias(self, event: AliasEvent, loc: Loc) -> yaml.Node:
        line, name = event.start_mark.line + 1, event.anchor
        if name in self.open_anchors:
            raise YamlSyntaxError(line, f"alias *{name} is used inside its own anchor &{name} (a value cannot "
                                  "contain itself)", _where(loc))
        if name not in self.anchors:
            raise YamlSyntaxError(line, f"alias *{name} has no anchor &{name} before it", _where(loc))
        self.aliases += 1
        if self.aliases > MAX_ALIASES:
            raise YamlSyntaxError(line, f"more than {MAX_ALIASES} aliases (*name) in one file", _where(loc))
        node = self.anchors[name]
        self._count(self.sizes[id(node)], event, loc, f"alias *{name}")
        return node

    def _scalar(self, event: ScalarEvent, loc: Loc) -> yaml.ScalarNode:
        tag = self._tag(event, yaml.ScalarNode, event.value, loc)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        self._anchor(event, node, loc)
        self.sizes[id(node)] = 1
        self._count(1, event, loc, "this value")
        if tag in (f"{_YAML}int", f"{_YAML}float"):
            _check_number(node, event.start_mark.line + 1, loc)
        return node

    def _collection(self, event: Any, loc: Loc, depth: int) -> _Open:
        line = event.start_mark.line + 1
        if depth > MAX_DEPTH:
            raise YamlSyntaxError(line, f"nested more than {MAX_DEPTH} levels deep", _where(loc))
        kind: type[yaml.CollectionNode]
        if isinstance(event, SequenceStartEvent):
            kind = yaml.SequenceNode
        elif isinstance(event, MappingStartEvent):
            kind = yaml.MappingNode
        else:  # pragma: no cover - the parser sends nothing else inside a document
            raise YamlSyntaxError(line, f"unexpected {type(event).__name__}", _where(loc))
        tag = self._tag(event, kind, None, loc)
        node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
        self._anchor(event, node, loc)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self._count(1, event, loc, "this value")
        return _Open(node, loc, event.anchor)


def _child_loc(stack: list[_Open]) -> Loc:
    if not stack:
        return ()
    parent = stack[-1]
    if isinstance(parent.node, yaml.SequenceNode):
        return (*parent.loc, len(parent.node.value))
    if parent.key is None:
        return parent.loc  # a key: named by its mapping
    key = parent.key.value if isinstance(parent.key, yaml.ScalarNode) else "?"
    return (*parent.loc, key)


def _check_number(node: yaml.ScalarNode, line: int, loc: Loc) -> None:
    """A number PyYAML would fail to build, or one too large for any field, is refused at its line."""
    text, whole = node.value, node.tag == f"{_YAML}int"
    if len(text) > MAX_NUMBER_CHARS:
        raise YamlSyntaxError(line, f"a number of {len(text)} characters; at most {MAX_NUMBER_CHARS}", _where(loc))
    try:
        value = _NUMBERS.construct_yaml_int(node) if whole else _NUMBERS.construct_yaml_float(node)
    except ValueError:
        raise YamlSyntaxError(line, f"{text!r} is not a valid number", _where(loc)) from None
    if whole and abs(value) > MAX_INT:
        raise YamlSyntaxError(line, f"whole number {text} is out of range (at most 2^63 - 1)", _where(loc))


def compose(text: str) -> yaml.Node | None:
    """The document's node tree (None for an empty stream); YamlSyntaxError for bad YAML or a limit crossed."""
    parser = _FastParser(text) if _FastParser is not None else yaml.SafeLoader(text)
    try:
        return _Composer(parser).document()
    finally:
        getattr(parser, "dispose", lambda: None)()


def parse(text: str) -> Document:
    try:
        root = compose(text)
        data = yaml.constructor.SafeConstructor().construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise YamlSyntaxError(_mark_line(exc), _syntax_message(exc, text)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, str(exc).replace("\n", " ")) from None
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
