"""The vendored front-end files: which npm package and version each comes from, copying, and checking.

The UI serves htmx, its SSE extension and uPlot from ui/static/vendor/ (learners may be offline: no CDN). The
versions are pinned in ui/package.json and ui/package-lock.json (with the registry's integrity hashes). To
refresh them:

    cd ui && npm ci --ignore-scripts && cd .. && python -m ui.vendor      # copies from ui/node_modules
    python -m ui.vendor --check                                           # sizes and sha256 against MANIFEST.json

`--check` needs no network; tests run it so an edited or truncated vendored file is caught.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

UI_DIR = Path(__file__).resolve().parent
VENDOR_DIR = UI_DIR / "static" / "vendor"
MANIFEST = VENDOR_DIR / "MANIFEST.json"

# npm package -> (folder under static/vendor, files copied from the package: path in package -> name here)
PACKAGES: dict[str, tuple[str, dict[str, str]]] = {
    "htmx.org": ("htmx-{version}", {"dist/htmx.min.js": "htmx.min.js", "LICENSE": "LICENSE"}),
    "htmx-ext-sse": ("htmx-ext-sse-{version}", {"dist/sse.js": "sse.js", "LICENSE": "LICENSE"}),
    "uplot": ("uplot-{version}", {"dist/uPlot.iife.min.js": "uPlot.iife.min.js", "dist/uPlot.min.css": "uPlot.min.css",
                                  "LICENSE": "LICENSE"}),
}


def pinned_versions() -> dict[str, str]:
    deps = json.loads((UI_DIR / "package.json").read_text())["dependencies"]
    return {name: deps[name] for name in PACKAGES}


def folder(package: str, version: str) -> str:
    return PACKAGES[package][0].format(version=version)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_from(node_modules: Path) -> dict[str, dict[str, object]]:
    """Copy the pinned files out of an `npm ci` tree and write MANIFEST.json; returns the manifest."""
    manifest: dict[str, dict[str, object]] = {}
    for package, version in pinned_versions().items():
        src_root = node_modules / package
        found = json.loads((src_root / "package.json").read_text())["version"]
        if found != version:
            raise SystemExit(f"{package}: node_modules has {found}, package.json pins {version} — run `npm ci`")
        dest = VENDOR_DIR / folder(package, version)
        dest.mkdir(parents=True, exist_ok=True)
        files = {}
        for src, name in PACKAGES[package][1].items():
            shutil.copyfile(src_root / src, dest / name)
            files[name] = {"from": src, "sha256": _sha256(dest / name), "bytes": (dest / name).stat().st_size}
        manifest[package] = {"version": version, "folder": dest.name, "files": files}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check() -> list[str]:
    """Problems with the vendored files (missing, changed, version not the pinned one); empty when all is well."""
    problems = []
    manifest = json.loads(MANIFEST.read_text())
    for package, version in pinned_versions().items():
        entry = manifest.get(package)
        if entry is None or entry["version"] != version:
            problems.append(f"{package}: MANIFEST.json does not record the pinned version {version}")
            continue
        for name, meta in entry["files"].items():
            path = VENDOR_DIR / entry["folder"] / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif _sha256(path) != meta["sha256"]:
                problems.append(f"{path}: sha256 differs from MANIFEST.json (edited or truncated?)")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ui.vendor", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="verify the vendored files against MANIFEST.json")
    p.add_argument("--node-modules", type=Path, default=UI_DIR / "node_modules")
    args = p.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        print("vendored files OK" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    manifest = copy_from(args.node_modules)
    for package, entry in manifest.items():
        print(f"{package}@{entry['version']} -> static/vendor/{entry['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
