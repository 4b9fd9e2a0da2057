"""The LLM side of the model registry: `registry/llm/versions/<version>/` beside the fraud models' `versions/`.

A version directory holds `model.pt` (weights), `tokenizer.json` (the tokenizer artifact), `generation_config.json`
(default temperature, top_p, max_tokens, stop) and `meta.json`: `{"version", "created_at", "stage", "kind": "llm",
"variant": null|"draft"|"int8"|"int4", "draft": <the version to draft with, on a target>, "metrics": {...held-out...},
"lineage": {"corpus": provenance with sha256, "parent", ...}, "architecture": {...}, "training": {...},
"files": {name: sha256}, "sha256": <of model.pt>, "samples": [...]}`. Every file is checked against its sha256
when loaded (`verified_paths`): a mismatch raises the registry's `CorruptArtifact`. No torch here: the server
loads the weights itself (services/llm/artifacts.py). The fraud registry (`Registry`) is untouched by this.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from services.registry.store import (
    STAGES,
    CorruptArtifact,
    RegistryError,
    VersionNotFound,
    _json_bytes,
    _utc_now,
    _write_atomic,
    sha256_hex,
)

LLM_FILES: tuple[str, ...] = ("model.pt", "tokenizer.json", "generation_config.json")
_NAME_RE = re.compile(r"^v[1-9][0-9]{0,8}(-[a-z0-9]{1,16})?$")


def check_llm_version(version: str) -> str:
    if not isinstance(version, str) or not _NAME_RE.match(version):
        raise RegistryError(f"bad LLM version name {version!r}: expected v1, v1-draft, v1-int8, ...")
    return version


class LLMRegistry:
    """LLM versions under `<registry root>/llm/versions/`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / "llm"
        self.versions_dir = self.root / "versions"

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        found = [p.name for p in self.versions_dir.iterdir() if _NAME_RE.match(p.name) and (p / "meta.json").is_file()]
        return sorted(found, key=lambda v: (len(v.split("-")[0]), v))

    def list(self) -> list[dict[str, Any]]:
        return [self.get(v) for v in self.versions()]

    def dir(self, version: str) -> Path:
        return self.versions_dir / check_llm_version(version)

    def get(self, version: str) -> dict[str, Any]:
        path = self.dir(version) / "meta.json"
        if not path.is_file():
            raise VersionNotFound(f"unknown LLM version {version}")
        return json.loads(path.read_text())

    def verified_paths(self, version: str) -> tuple[dict[str, Any], dict[str, Path]]:
        """The meta and the path of every artifact file, after checking each file's sha256."""
        meta = self.get(version)
        paths = {}
        for name, expected in meta["files"].items():
            path = self.dir(version) / name
            if not path.is_file():
                raise CorruptArtifact(f"LLM {version}: {name} is missing")
            actual = sha256_hex(path.read_bytes())
            if actual != expected:
                raise CorruptArtifact(
                    f"LLM {version}: {name} sha256 {actual[:12]}… does not match the registered {expected[:12]}…")
            paths[name] = path
        return meta, paths

    def verify(self, version: str) -> tuple[bool, str]:
        try:
            self.verified_paths(version)
        except CorruptArtifact as exc:
            return False, str(exc)
        return True, "ok"

    def register(self, version: str, staged: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Move the files of `staged` (a directory holding LLM_FILES) in as `version`, with sha256s and meta."""
        dest = self.dir(version)
        if meta.get("stage", "staging") not in STAGES:
            raise RegistryError(f"bad stage {meta.get('stage')!r}")
        files = {name: sha256_hex((staged / name).read_bytes()) for name in LLM_FILES}
        full = {"version": version, "created_at": _utc_now(), "stage": "staging", "kind": "llm", "variant": None,
                **meta, "files": files, "sha256": files["model.pt"]}
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in LLM_FILES:
            shutil.copyfile(staged / name, dest / name)
        _write_atomic(dest / "meta.json", _json_bytes(full))
        return full
