"""Property: whatever is done to a catalog file, the loader either loads it or lists problems as
`file:line: field: message`; no exception escapes and no file takes 2 s.

The catalog's files (scenarios/*.yaml) are mutated by the hundred on every run: bytes flipped, inserted or
deleted, lines duplicated, swapped or dropped, and YAML-aware damage (explicit tags, anchors and aliases, alias
bombs, deep nesting, huge and odd numbers, NUL and other control characters, unicode, variable references).

Reproducible while still varying: the examples are seeded by the UTC date, so every machine runs the same set on
a given day and a new set the next. A failure names its seed; `FAULTLINE_FUZZ_SEED=<seed>` replays it. The
example database is off, so a run never depends on what an earlier one found.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from lab.scenario import check_file
from lab.scenario.loader import CATALOG_DIR

SEED = int(os.environ.get("FAULTLINE_FUZZ_SEED") or dt.datetime.now(dt.UTC).strftime("%Y%m%d"))
EXAMPLES = int(os.environ.get("FAULTLINE_FUZZ_EXAMPLES") or 600)  # about 10-30 s on a loaded 2-core machine
BOUND_S = 2.0

FILES = sorted(CATALOG_DIR.glob("*.yaml"))
TEXTS = {p.stem: p.read_bytes() for p in FILES}

TOKENS = [
    "!!timestamp 2024-13-45", "2024-02-30", "!!int 'abc'", "!!float 'x'", "!!bool maybe", "!!binary aGk=",
    "!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!custom x", "!!set {a: null}",
    "!!omap [a: 1]", "!!str 5", "! 5", "&a [*a]", "&m {<<: *m}", "*nowhere", "&x 1", "{<<: [1, 2]}",
    ".nan", "-.inf", "1e999", "0x_", "0b2", "1:2:3:4:5", "1_000", "0o17", "-0", "~", "null", "[]", "{}", "''",
    "'{{ x }}'", "'{{ layout.nope }}'", "'{{'", "'}}'", "? [a]: b", "[a, {b: c}]", "|\n  block", ">-\n  folded",
    "\x00", "\x07", "\ufeff", "\u2028", "\u202e", "é", "🙂", "\x85", "'\\x00'", '"\\u0000"', "- a", "x: y",
]


def _number(n: int) -> str:
    return "9" * n


def _nest(n: int) -> str:
    return "[" * n + "]" * n


def _nest_map(n: int) -> str:
    return "{a: " * n + "1" + "}" * n


def _sexagesimal(n: int) -> str:
    return ":".join(["1"] * n)


def _bomb(levels: int) -> str:
    lines = ["b0: &b0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines)


hostile_token = st.one_of(
    st.sampled_from(TOKENS),
    st.integers(1, 6000).map(_number),
    st.integers(1, 120).map(_nest),
    st.integers(1, 60).map(_nest_map),
    st.integers(2, 3000).map(_sexagesimal),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)


# Weighted towards damage that gets past the YAML parser, where most of the loader's work is.
KINDS = ["flip", "insert", "delete", "dup-line", "swap-lines", "drop-line", "bomb"] + ["value"] * 5 + ["line"] * 2 + [
    "tail"] * 2


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(KINDS))
    n = len(data)
    if kind == "flip" and n:
        i = draw(st.integers(0, n - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if kind == "insert":
        i = draw(st.integers(0, n))
        return data[:i] + draw(st.one_of(st.binary(min_size=1, max_size=8), st.text(min_size=1, max_size=8).map(
            lambda t: t.encode("utf-8", "replace")))) + data[i:]
    if kind == "delete" and n:
        i = draw(st.integers(0, n - 1))
        return data[:i] + data[i + draw(st.integers(1, 40)):]
    lines = _lines(data)
    j = draw(st.integers(0, len(lines) - 1))
    if kind == "dup-line":
        lines.insert(draw(st.integers(0, len(lines))), lines[j])
    elif kind == "swap-lines":
        k = draw(st.integers(0, len(lines) - 1))
        lines[j], lines[k] = lines[k], lines[j]
    elif kind == "drop-line":
        del lines[j]
    elif kind == "value":  # the value after a key, replaced by something hostile
        keyed = [i for i, line in enumerate(lines) if b": " in line or line.rstrip().endswith(b":")]
        if keyed:
            i = draw(st.sampled_from(keyed))
            key = lines[i][: lines[i].index(b":") + 1]
            lines[i] = key + b" " + draw(hostile_token).encode("utf-8")
    elif kind == "line":  # a whole line of its own, at the indentation of the line it replaces
        indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
        lines[j] = indent + draw(hostile_token).encode("utf-8")
    elif kind == "bomb":
        lines.append(_bomb(draw(st.integers(2, 9))).encode())
    else:  # a top-level key with a hostile value at the end
        lines.append(b"zz_extra: " + draw(hostile_token).encode("utf-8"))
    return b"\n".join(lines)


@st.composite
def mutated_file(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(TEXTS)))
    data = TEXTS[name]
    for _ in range(draw(st.integers(1, 4))):
        data = draw(mutation(data))
    return name, data


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=dt.timedelta(seconds=BOUND_S), database=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated_file())
def test_mutated_catalog_files_load_or_list_problems(work: Path, case: tuple[str, bytes]) -> None:
    name, data = case
    path = work / f"{name}.yaml"  # the catalog's own name, so the id check does not reject every file
    path.write_bytes(data)
    shape = re.compile(rf"^{re.escape(str(path))}:(\d+): \S.*?: .+$")
    t0 = time.perf_counter()
    scenario, problems = check_file(path)
    elapsed = time.perf_counter() - t0
    assert elapsed < BOUND_S, f"seed {SEED}: {elapsed:.2f} s"
    if not problems:
        assert scenario is not None
        return
    assert scenario is None
    n_lines = data.count(b"\n") + 1
    for problem in problems:
        m = shape.match(problem)
        assert m and "\n" not in problem, f"seed {SEED}: {problem!r}"
        assert 1 <= int(m.group(1)) <= n_lines + 1, f"seed {SEED}: {problem}"
        assert "internal error" not in problem, f"seed {SEED}: {problem}"
