"""The model registry as a library over a directory: versions, stages, lineage, checksummed artifacts.

Layout under the registry root (e.g. `.faultline/registry/`):
  versions/<vN>/model.pt        the artifact (bytes are opaque here: no torch in this module)
  versions/<vN>/meta.json       version, stage, metrics, lineage, sha256 of model.pt, preprocessing, variant
  versions/<vN>/reference.json  a sample of training inputs (drift reference)

A version exists once its meta.json exists: meta is written last, by atomic rename, so readers never see a
half-registered version. Writers (register, set_stage) hold an flock on `<root>/.lock`, because the trainer
CLI, the registry service and a variant-making child process may all write at once.

`load()` checks the artifact's sha256 against meta and raises `CorruptArtifact` on mismatch: a corrupted model
is refused, never served. Deliberately broken versions for the bad-deploy scenarios are made by
`services.registry.variants.make_variant(registry, ...)` (it needs torch); that module uses this one, never the
other way round.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES: tuple[str, ...] = ("production", "canary", "staging", "archived")
# production and canary are held by at most one version each; promoting another one archives the previous
EXCLUSIVE_STAGES: tuple[str, ...] = ("production", "canary")
VARIANTS: tuple[str, ...] = ("flipped_labels", "no_standardisation", "slow", "nan", "corrupt")
_VERSION_RE = re.compile(r"^v[1-9][0-9]{0,8}$")


class RegistryError(Exception):
    """Base class of registry failures (bad version names, unknown versions, bad stages)."""


class VersionNotFound(RegistryError):
    pass


class CorruptArtifact(RegistryError):
    """The artifact on disk does not match the sha256 recorded at registration (or is missing)."""


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its meta and the exact bytes whose sha256 matched."""

    version: str
    meta: dict[str, Any]
    data: bytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_version_name(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise RegistryError(f"bad version name {version!r}: expected v1, v2, ...")
    return version


def _utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


class Registry:
    """A registry rooted at `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    # ---------------------------------------------------------------------------------------------- reading
    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        found = [
            p.name for p in self.versions_dir.iterdir() if _VERSION_RE.match(p.name) and (p / "meta.json").is_file()
        ]
        return sorted(found, key=lambda v: int(v[1:]))

    def list(self) -> list[dict[str, Any]]:
        return [self.get(v) for v in self.versions()]

    def exists(self, version: str) -> bool:
        return _VERSION_RE.match(version or "") is not None and (self._dir(version) / "meta.json").is_file()

    def get(self, version: str) -> dict[str, Any]:
        path = self._dir(version) / "meta.json"
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            raise VersionNotFound(f"no such model version: {version}") from None

    def by_stage(self, stage: str) -> list[str]:
        return [m["version"] for m in self.list() if m.get("stage") == stage]

    def production(self) -> str | None:
        found = self.by_stage("production")
        return found[-1] if found else None

    def reference(self, version: str) -> dict[str, Any]:
        self.get(version)
        path = self._dir(version) / "reference.json"
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"version": version, "rows": []}

    def artifact_path(self, version: str) -> Path:
        return self._dir(version) / "model.pt"

    def load(self, version: str) -> Artifact:
        """The artifact's bytes, verified against the sha256 in meta. Raises CorruptArtifact on mismatch."""
        meta = self.get(version)
        try:
            data = self.artifact_path(version).read_bytes()
        except FileNotFoundError:
            raise CorruptArtifact(f"artifact missing for {version}: {self.artifact_path(version)}") from None
        got = sha256_hex(data)
        expected = meta.get("sha256")
        if got != expected:
            raise CorruptArtifact(
                f"artifact sha256 mismatch for {version}: expected {expected}, got {got}; refusing to serve"
            )
        return Artifact(version, meta, data)

    def _dir(self, version: str) -> Path:
        return self.versions_dir / check_version_name(version)

    # ---------------------------------------------------------------------------------------------- writing
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def register(
        self,
        artifact: bytes,
        meta: dict[str, Any],
        reference: dict[str, Any] | None = None,
        stage: str = "staging",
        sha256: str | None = None,
    ) -> dict[str, Any]:
        """Store a new version (the next vN) and return its meta.

        `meta` carries metrics, lineage, preprocessing, variant...; version, created_at, stage and sha256 are
        filled in here. `sha256` overrides the checksum recorded (only the `corrupt` variant uses it: the
        recorded sum is the one of the good bytes).
        """
        self._check_stage(stage)
        with self._locked():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            taken = [int(p.name[1:]) for p in self.versions_dir.iterdir() if _VERSION_RE.match(p.name)]
            version = f"v{max(taken, default=0) + 1}"
            vdir = self.versions_dir / version
            vdir.mkdir()
            full = {
                "version": version,
                "created_at": _utc_now(),
                "stage": stage,
                **{k: v for k, v in meta.items() if k not in ("version", "created_at", "stage", "sha256")},
                "sha256": sha256 or sha256_hex(artifact),
            }
            full.setdefault("variant", None)
            _write_atomic(vdir / "model.pt", artifact)
            _write_atomic(vdir / "reference.json", _json_bytes({"version": version, **(reference or {"rows": []})}))
            if stage in EXCLUSIVE_STAGES:
                self._demote_holders(stage, keep=version)
            _write_atomic(vdir / "meta.json", _json_bytes(full))
        return full

    def set_stage(self, version: str, stage: str) -> dict[str, Any]:
        """Move a version to a stage; promoting to production/canary archives the previous holder."""
        self._check_stage(stage)
        with self._locked():
            meta = self.get(version)
            if stage in EXCLUSIVE_STAGES:
                self._demote_holders(stage, keep=version)
            meta["stage"] = stage
            meta["stage_changed_at"] = _utc_now()
            _write_atomic(self._dir(version) / "meta.json", _json_bytes(meta))
        return meta

    def _demote_holders(self, stage: str, keep: str) -> None:
        for other in self.versions():
            if other == keep:
                continue
            meta = self.get(other)
            if meta.get("stage") == stage:
                meta["stage"] = "archived"
                meta["stage_changed_at"] = _utc_now()
                _write_atomic(self._dir(other) / "meta.json", _json_bytes(meta))

    @staticmethod
    def _check_stage(stage: str) -> None:
        if stage not in STAGES:
            raise RegistryError(f"bad stage {stage!r}: expected one of {', '.join(STAGES)}")

    # ------------------------------------------------------------------------------------ broken on purpose
    def corrupt_artifact(self, version: str, n_bytes: int = 16) -> None:
        """Flip bytes in the middle of a version's model.pt, leaving meta (and its sha256) untouched.

        The good bytes are kept aside (model.pt.orig, first corruption only) so `restore_artifact` can undo it.
        """
        with self._locked():
            self.get(version)
            path = self.artifact_path(version)
            data = path.read_bytes()
            backup = path.with_name("model.pt.orig")
            if not backup.exists():
                _write_atomic(backup, data)
            broken = bytearray(data)
            corrupt_bytes(broken, n_bytes)
            _write_atomic(path, bytes(broken))

    def restore_artifact(self, version: str) -> bool:
        """Undo `corrupt_artifact`; False when there was nothing to restore."""
        with self._locked():
            self.get(version)
            backup = self.artifact_path(version).with_name("model.pt.orig")
            if not backup.exists():
                return False
            os.replace(backup, self.artifact_path(version))
            return True

    def verify(self, version: str) -> tuple[bool, str]:
        """(ok, message) of the sha256 check, without loading anything."""
        try:
            self.load(version)
        except CorruptArtifact as exc:
            return False, str(exc)
        return True, "sha256 matches"


def corrupt_bytes(data: bytearray, n_bytes: int = 16) -> None:
    """Invert `n_bytes` bytes in the middle of `data` in place (inside the weights of a torch zip)."""
    if not data:
        data.extend(b"\xff")
        return
    start = max(0, len(data) // 2 - n_bytes // 2)
    for i in range(start, min(len(data), start + n_bytes)):
        data[i] ^= 0xFF
