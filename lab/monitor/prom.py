"""Parse the Prometheus text exposition format (what prometheus_client's generate_latest() writes).

The monitor scrapes every service once a second, so this is a small, fast, forgiving parser: it keeps every
sample as `(name, labels) -> value`, skips `_created` timestamps (useless for rates and costly to store), and
reports malformed lines instead of failing the whole scrape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+\S+)?[ \t]*$")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPED = re.compile(r"\\[\\\"n]")
_SPECIAL_VALUES = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan, "Inf": math.inf}


class ParseError(ValueError):
    """A line that is not a valid sample (reported with its line number)."""


@dataclass
class Exposition:
    """One scrape's worth of samples plus the declared family types (`counter`, `gauge`, `histogram`, ...)."""

    samples: dict[SampleKey, float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def get(self, name: str, **labels: str) -> float | None:
        """The value of one sample, labels given exactly (all of them), or None."""
        return self.samples.get((name, tuple(sorted(labels.items()))))


def _parse_labels(text: str, lineno: int) -> Labels:
    if not text.strip():
        return ()
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            raise ParseError(f"line {lineno}: bad label set {{{text}}}")
        value = m.group(2)
        if "\\" in value:
            value = _ESCAPED.sub(lambda e: _UNESCAPE[e.group(0)], value)
        pairs.append((m.group(1), value))
        pos = m.end()
    # prometheus_client already sorts labels; sorting again keeps keys stable for any other exporter.
    pairs.sort()
    return tuple(pairs)


def _parse_value(text: str, lineno: int) -> float:
    special = _SPECIAL_VALUES.get(text)
    if special is not None:
        return special
    try:
        return float(text)
    except ValueError:
        raise ParseError(f"line {lineno}: bad sample value {text!r}") from None


def parse(text: str, keep_created: bool = False) -> Exposition:
    """Parse exposition text. Malformed lines land in `errors`; everything else is kept."""
    out = Exposition()
    samples = out.samples
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == "TYPE":
                out.types[parts[2]] = parts[3].strip()
            continue
        m = _SAMPLE.match(line)
        if m is None:
            out.errors.append(f"line {lineno}: not a sample: {line[:80]!r}")
            continue
        name = m.group(1)
        if not keep_created and name.endswith("_created"):
            continue
        try:
            labels = _parse_labels(m.group(2), lineno) if m.group(2) else ()
            samples[(name, labels)] = _parse_value(m.group(3), lineno)
        except ParseError as exc:
            out.errors.append(str(exc))
    return out
