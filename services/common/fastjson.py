"""JSON encode/decode for hot paths: orjson when installed, the standard library otherwise.

Both return/accept bytes so callers never care which one is underneath. orjson is ~10x faster on the small
objects the gateway and the feature store exchange on every request.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - exercised only where orjson is missing

    def dumps(obj: Any) -> bytes:
        # allow_nan=False: NaN is not JSON; callers must not produce it.
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)


JSONDecodeError = ValueError  # orjson.JSONDecodeError and json.JSONDecodeError both subclass ValueError
