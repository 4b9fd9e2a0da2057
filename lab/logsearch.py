"""Log search that cannot run away: what `grep` means for `faultline logs`, `/api/services/{name}/logs` and the
console's `logs` operation.

By default `grep` is a plain, case-sensitive substring (like `grep -F`). A regular expression only when asked for
(`regex=True`), and then through RE2 (google-re2), whose matching time is linear in the text and which releases
the GIL while it matches: no pattern can backtrack for seconds holding the GIL, which once froze every route of
the lab (docs/reliability.md, finding 2). RE2's cost is still the text's length times the compiled program's size,
so everything is bounded: a pattern is at most MAX_PATTERN_CHARS characters, compiles within RE2_MAX_MEM to at most
MAX_PROGRAM_SIZE instructions, and LogBuffer.query scans at most MAX_SCAN_CHARS of the newest text and stops
after MAX_SEARCH_S (what it found by then is the answer).
"""

from __future__ import annotations

from collections.abc import Callable

import re2

MAX_PATTERN_CHARS = 500
MAX_SCAN_CHARS = 16 * 1024 * 1024  # the whole 5,000-line buffer unless its lines are very long
MAX_SEARCH_S = 2.0
RE2_MAX_MEM = 8 * 1024 * 1024
# RE2 falls back to its NFA on patterns whose DFA outgrows memory: ~50 ms per 8 KiB line at 5,000 instructions
MAX_PROGRAM_SIZE = 5000

LineMatch = Callable[[str], bool]


class BadSearch(ValueError):
    """A `grep` refused before any line is read; the message names the problem (the lab answers 400)."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a learner's typo is an answer, not a line on the lab's stderr
    options.max_mem = RE2_MAX_MEM
    return options


def line_matcher(grep: str | None, regex: bool = False) -> LineMatch | None:
    """A predicate for log lines, or None when `grep` is empty (every line); BadSearch for a refused pattern."""
    if not grep:
        return None
    if len(grep) > MAX_PATTERN_CHARS:
        raise BadSearch(f"grep: at most {MAX_PATTERN_CHARS} characters, got {len(grep)}")
    if not regex:
        return lambda line: grep in line
    try:
        compiled = re2.compile(grep, _options())
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" is valid JSON): RE2 takes UTF-8 only
        raise BadSearch("grep: not valid Unicode text (a lone surrogate)") from None
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise BadSearch(f"grep is not a regular expression RE2 accepts: {reason} (RE2 has no backreferences or "
                        "lookaround; without regex, grep is a plain substring)") from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise BadSearch(f"grep: the expression is too large for a log search (RE2 program of {compiled.programsize} "
                        f"instructions, at most {MAX_PROGRAM_SIZE}); use smaller repetition counts")
    return lambda line: compiled.search(line) is not None
