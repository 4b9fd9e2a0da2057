"""What a toxic is: a named type with integer attributes and one behaviour, `pipe`, run per connection.

Like Toxiproxy's Go toxics, a toxic object only holds settings; everything about one connection lives on the
`Stub` it is given (its input and output, its per-connection state, the data it currently holds). The stub
contract that makes live changes safe: whatever a toxic has read but not yet written sits in `stub.holding`
(or `stub.eof_pending` for a held end-of-stream) so that interrupting the toxic at any await never loses data.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol

from services.netproxy.errors import BAD_REQUEST_BODY
from services.netproxy.stream import Chunk, Item, TimedOut

# JSON-safe integers; also keeps every timer and size computation in range.
MAX_ATTRIBUTE = 2**53 - 1


class Stub(Protocol):
    """The per-connection, per-toxic handle a toxic's `pipe` works through (implemented in `link.py`)."""

    holding: Chunk | None
    eof_pending: bool
    state: Any

    async def recv(self, deadline: float | None = None) -> Item | TimedOut: ...

    async def send(self, chunk: Chunk, rest: Chunk | None = None) -> None: ...

    def close(self) -> None: ...

    def reset(self) -> None: ...


class Toxic:
    """Base class: subclasses set `type_name`, `attributes` (name -> default) and implement `pipe`."""

    type_name: ClassVar[str]
    attributes: ClassVar[dict[str, int]] = {}
    # How many chunks may wait in front of this toxic (Toxiproxy's BufferedToxic; latency needs a deep queue so
    # that arrival times are taken when data arrives, not when the previous chunk leaves).
    buffer_size: ClassVar[int] = 0

    def __init__(self, values: dict[str, int] | None = None) -> None:
        self.values = {**self.attributes, **(values or {})}

    @classmethod
    def parse_attributes(cls, raw: Any, base: dict[str, int] | None = None) -> dict[str, int]:
        """Merge a JSON `attributes` object over `base` (or the defaults); unknown keys are ignored like Go does.

        Values must be non-negative integers: a 400 names the field otherwise.
        """
        merged = dict(cls.attributes if base is None else base)
        if raw is None:
            return merged
        if not isinstance(raw, dict):
            raise BAD_REQUEST_BODY.joined(f"attributes must be a JSON object, got {_json_type(raw)}")
        for key, value in raw.items():
            if key not in cls.attributes:
                continue
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)  # 100.0 is fine; 2.5, 1e400 and "100" are not
            if isinstance(value, bool) or not isinstance(value, int):
                raise BAD_REQUEST_BODY.joined(
                    f"attribute {key} of a {cls.type_name} toxic must be an integer, got {value!r}"
                )
            if value < 0:
                raise BAD_REQUEST_BODY.joined(f"attribute {key} of a {cls.type_name} toxic must be >= 0, got {value}")
            if value > MAX_ATTRIBUTE:
                raise BAD_REQUEST_BODY.joined(
                    f"attribute {key} of a {cls.type_name} toxic must be <= {MAX_ATTRIBUTE}, got {value}"
                )
            merged[key] = int(value)
        return merged

    def new_state(self) -> Any:
        """Per-connection state that survives updates of this toxic (only limit_data needs one)."""
        return None

    async def pipe(self, stub: Stub) -> None:
        raise NotImplementedError

    def cleanup(self, stub: Stub) -> None:
        """Called when the toxic is removed from a live connection (timeout closes the connection here)."""
        return None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
