"""The LLM's tokenizer: byte-level (256 byte tokens + BOS/EOS), a versioned JSON artifact with a chat template.

Byte-level means any text round-trips and the output layer stays tiny (258 rows). The artifact
(`tokenizer.json`) carries its own version, the special tokens' ids and the chat template, so a model version
and the tokenizer it was trained with travel together (a mismatch is one of the failures the lab teaches).
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

    @property
    def vocab_size(self) -> int:
        return 258

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_id, *ids] if bos else ids

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_str(self, token: int) -> str:
        """One token as text for logprobs: a special's name, a byte as itself or `\\xNN` when not UTF-8 alone."""
        if token == self.bos_id:
            return "<|bos|>"
        if token == self.eos_id:
            return "<|eos|>"
        return bytes([token]).decode("utf-8", errors="backslashreplace")

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        text = "".join(self.chat.message_format.format(role=m["role"], content=m["content"]) for m in messages)
        return self.encode(text + self.chat.generation_prompt, bos=True)

    def to_json(self) -> dict[str, Any]:
        return {
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
        return cls(version=data["version"], bos_id=int(special["bos"]), eos_id=int(special["eos"]), chat=chat)


class StreamDecoder:
    """Incremental bytes → text: a UTF-8 character split across tokens is emitted once complete."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: list[int]) -> str:
        return self._dec.decode(bytes(i for i in ids if i < 256))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
