"""The LLM's tokenizer: byte-level (256 byte tokens + BOS/EOS), a versioned JSON artifact with a chat template.

Byte-level means any text round-trips and the output layer stays tiny (258 rows). The artifact
(`tokenizer.json`) carries its own version, the special tokens' ids and the chat template, so a model version
and the tokenizer it was trained with travel together (a mismatch is one of the failures the lab teaches).

A tokenizer may carry a `byte_map` (a permutation of the 256 byte ids: byte b is token `byte_map[b]`): version
`bytes-2` of the registry's `v2` is one. Weights whose embedding rows are permuted the same way behave exactly as
before under it, and a different thing entirely under the plain mapping: the wrong-tokenizer deploy made real.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKENIZER_VERSION = "bytes-1"


@dataclass(frozen=True)
class ChatTemplate:
    """How messages become a prompt: BOS, then `message_format` per message, then `generation_prompt`."""

    message_format: str = "{role}: {content}\n"
    generation_prompt: str = "assistant:"
    roles: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class ByteTokenizer:
    version: str = TOKENIZER_VERSION
    bos_id: int = 256
    eos_id: int = 257
    chat: ChatTemplate = field(default_factory=ChatTemplate)
    byte_map: tuple[int, ...] | None = None  # byte -> token id (a permutation of 0..255); None: the identity

    def __post_init__(self) -> None:
        if self.byte_map is not None and sorted(self.byte_map) != list(range(256)):
            raise ValueError("byte_map must be a permutation of 0..255")

    @property
    def vocab_size(self) -> int:
        return 258

    @property
    def token_to_byte(self) -> tuple[int, ...] | None:
        """The inverse of byte_map (None: the identity)."""
        if self.byte_map is None:
            return None
        inverse = [0] * 256
        for b, t in enumerate(self.byte_map):
            inverse[t] = b
        return tuple(inverse)

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        if self.byte_map is not None:
            ids = [self.byte_map[b] for b in ids]
        return [self.bos_id, *ids] if bos else ids

    def to_bytes(self, ids: list[int]) -> bytes:
        inverse = self.token_to_byte
        if inverse is None:
            return bytes(i for i in ids if i < 256)
        return bytes(inverse[i] for i in ids if i < 256)

    def decode(self, ids: list[int]) -> str:
        return self.to_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self.token_to_byte)

    def token_str(self, token: int) -> str:
        """One token as text for logprobs: a special's name, a byte as itself or `\\xNN` when not UTF-8 alone."""
        if token == self.bos_id:
            return "<|bos|>"
        if token == self.eos_id:
            return "<|eos|>"
        return self.to_bytes([token]).decode("utf-8", errors="backslashreplace")

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        text = "".join(self.chat.message_format.format(role=m["role"], content=m["content"]) for m in messages)
        return self.encode(text + self.chat.generation_prompt, bos=True)

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {} if self.byte_map is None else {"byte_map": list(self.byte_map)}
        return {
            **extra,
            "type": "bytes",
            "version": self.version,
            "vocab_size": self.vocab_size,
            "special_tokens": {"bos": self.bos_id, "eos": self.eos_id},
            "chat_template": {
                "message_format": self.chat.message_format,
                "generation_prompt": self.chat.generation_prompt,
                "roles": list(self.chat.roles),
            },
        }

    def save(self, path: Path) -> str:
        data = json.dumps(self.to_json(), indent=2, sort_keys=True).encode()
        path.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path) -> ByteTokenizer:
        data = json.loads(path.read_text())
        if data.get("type") != "bytes":
            raise ValueError(f"{path}: unsupported tokenizer type {data.get('type')!r}")
        special = data["special_tokens"]
        tpl = data.get("chat_template", {})
        chat = ChatTemplate(
            message_format=tpl.get("message_format", ChatTemplate.message_format),
            generation_prompt=tpl.get("generation_prompt", ChatTemplate.generation_prompt),
            roles=tuple(tpl.get("roles", ChatTemplate.roles)),
        )
        byte_map = data.get("byte_map")
        return cls(version=data["version"], bos_id=int(special["bos"]), eos_id=int(special["eos"]), chat=chat,
                   byte_map=tuple(int(t) for t in byte_map) if byte_map is not None else None)


class StreamDecoder:
    """Incremental bytes → text: a UTF-8 character split across tokens is emitted once complete."""

    def __init__(self, token_to_byte: tuple[int, ...] | None = None) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._map = token_to_byte

    def feed(self, ids: list[int]) -> str:
        if self._map is not None:
            return self._dec.decode(bytes(self._map[i] for i in ids if i < 256))
        return self._dec.decode(bytes(i for i in ids if i < 256))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
