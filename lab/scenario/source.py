"""Reading a scenario file safely: a regular file of at most 1 MiB, in UTF-8, holding only characters YAML allows.

Scenario files come from authors and from whoever shares them, so nothing here trusts the path: a FIFO would block
an `open()` forever, `/dev/zero` (directly or through a symlink) never ends, and a 20 MB file is not a scenario.
The file is opened non-blocking and checked with `fstat` on the opened descriptor (the path may be swapped
between a check and the open), then read with a limit whatever its size claims to be.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

MAX_BYTES = 1 << 20  # 1 MiB: the catalog's files are about 10 KiB

# What YAML 1.1 allows in a stream (PyYAML's own rule): tab, newlines and the printable characters.
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class SourceError(Exception):
    """A file that cannot be read as a scenario's text; `line` is where the problem is (1 for the whole file)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _check_regular(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(1, f"not a regular file ({_kind(st.st_mode)}); a scenario is a .yaml file")
    if st.st_size > MAX_BYTES:
        raise SourceError(1, f"the file has {st.st_size:,} bytes; a scenario file may have at most {MAX_BYTES:,}")


def read_bytes(path: Path | str) -> bytes:
    """The file's bytes, or SourceError: missing, unreadable, not a regular file, or over MAX_BYTES."""
    try:
        _check_regular(os.stat(path))  # before opening: opening a FIFO (even non-blocking) is not needed
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SourceError(1, "no such file") from None
    except OSError as exc:
        raise SourceError(1, f"cannot read: {exc.strerror or exc}") from None
    try:
        _check_regular(os.fstat(fd))  # what was opened, in case the path changed since the stat above
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:  # a file may grow after fstat: read one byte past the limit at most
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise SourceError(1, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise SourceError(1, f"the file has more than {MAX_BYTES:,} bytes; a scenario file may have at most that")
    return b"".join(chunks)


def decode(data: bytes) -> str:
    """UTF-8 text with only the characters YAML allows, or SourceError at the line of the first bad one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SourceError(line, f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column}") from None
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise SourceError(
            line, f"control character U+{ord(bad.group()):04X} at column {column} is not allowed in YAML"
        )
    return text


def read_text(path: Path | str) -> str:
    """The scenario file's text (see the module docstring for what is refused)."""
    return decode(read_bytes(path))
