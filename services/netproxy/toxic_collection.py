"""A proxy's toxics: one ordered chain per direction, and the live links those chains apply to.

Adding, updating or removing a toxic validates the request the way Toxiproxy does (same order of checks, same
errors), changes the chain, and applies the change to every live connection at once, without waiting for data.
"""

from __future__ import annotations

from typing import Any

from services.netproxy.errors import (
    BAD_REQUEST_BODY,
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    TOXIC_EXISTS,
    TOXIC_NOT_FOUND,
)
from services.netproxy.link import DOWNSTREAM, UPSTREAM, Link
from services.netproxy.toxics import REGISTRY, Toxic

DIRECTIONS = (UPSTREAM, DOWNSTREAM)


class ToxicWrapper:
    """A toxic as the API sees it: name, type, stream, toxicity and the toxic (its attributes)."""

    def __init__(self, name: str, type_name: str, stream: str, toxicity: float, toxic: Toxic) -> None:
        self.name = name
        self.type_name = type_name
        self.stream = stream
        self.toxicity = toxicity
        self.toxic = toxic

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.toxic.values),
            "name": self.name,
            "type": self.type_name,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


class ToxicCollection:
    def __init__(self) -> None:
        self.chains: dict[str, list[ToxicWrapper]] = {d: [] for d in DIRECTIONS}
        self.links: set[Link] = set()

    def toxics(self) -> list[ToxicWrapper]:
        """Upstream toxics first, then downstream, each in the order they were added (Toxiproxy's order)."""
        return [w for d in DIRECTIONS for w in self.chains[d]]

    def find(self, name: str) -> ToxicWrapper | None:
        for wrapper in self.toxics():
            if wrapper.name == name:
                return wrapper
        return None

    def get(self, name: str) -> ToxicWrapper:
        wrapper = self.find(name)
        if wrapper is None:
            raise TOXIC_NOT_FOUND
        return wrapper

    def add_json(self, body: Any) -> ToxicWrapper:
        if not isinstance(body, dict):
            raise BAD_REQUEST_BODY.joined(f"expected a JSON object, got {_kind(body)}")
        name = _string(body, "name", "")
        type_name = _string(body, "type", "")
        stream = _string(body, "stream", DOWNSTREAM)
        toxicity = _toxicity(body, 1.0)
        if stream not in DIRECTIONS:
            raise INVALID_STREAM
        if not name:
            name = f"{type_name}_{stream}"
        cls = REGISTRY.get(type_name)
        if cls is None:
            raise INVALID_TOXIC_TYPE
        if self.find(name) is not None:
            raise TOXIC_EXISTS
        toxic = cls(cls.parse_attributes(body.get("attributes")))
        wrapper = ToxicWrapper(name, type_name, stream, toxicity, toxic)
        self.chains[stream].append(wrapper)
        for link in list(self.links):
            if link.direction == stream:
                link.add_stub(wrapper)
        return wrapper

    def update_json(self, name: str, body: Any) -> ToxicWrapper:
        wrapper = self.get(name)
        if not isinstance(body, dict):
            raise BAD_REQUEST_BODY.joined(f"expected a JSON object, got {_kind(body)}")
        cls = type(wrapper.toxic)
        values = cls.parse_attributes(body.get("attributes"), base=wrapper.toxic.values)
        toxicity = _toxicity(body, wrapper.toxicity)
        wrapper.toxic = cls(values)
        wrapper.toxicity = toxicity
        for link in list(self.links):
            if link.direction == wrapper.stream:
                link.update_stub(wrapper)
        return wrapper

    def remove(self, name: str) -> None:
        wrapper = self.get(name)
        self.chains[wrapper.stream].remove(wrapper)
        for link in list(self.links):
            if link.direction == wrapper.stream:
                link.remove_stub(wrapper)

    def reset(self) -> None:
        for wrapper in self.toxics():
            self.remove(wrapper.name)

    def start_link(self, link: Link) -> None:
        self.links.add(link)
        for wrapper in self.chains[link.direction]:
            link.add_stub(wrapper)

    def remove_link(self, link: Link) -> None:
        self.links.discard(link)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | float) and not isinstance(value, bool) else "a boolean"


def _string(body: dict[str, Any], key: str, default: str) -> str:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BAD_REQUEST_BODY.joined(f"{key} must be a string, got {_kind(value)}")
    return value


def _toxicity(body: dict[str, Any], default: float) -> float:
    value = body.get("toxicity")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BAD_REQUEST_BODY.joined(f"toxicity must be a number, got {_kind(value)}")
    if not 0.0 <= value <= 1.0:
        raise BAD_REQUEST_BODY.joined(f"toxicity must be between 0 and 1, got {value}")
    return float(value)
