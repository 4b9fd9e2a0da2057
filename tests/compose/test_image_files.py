"""The compose backend's files, checked without an engine: the image's requirements agree with pyproject.toml, the
Dockerfile takes its base image as a build argument (default python:3.11-slim) and installs from the wheelhouse with
--no-index, the offline override is what the generator writes, and engine detection names what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from lab import composegen

ROOT = Path(__file__).resolve().parents[2]


def test_image_requirements_match_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["ml"],
              *project["optional-dependencies"]["loadgen"]]
    lines = [ln.strip() for ln in (ROOT / "docker" / "requirements-image.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines == wanted


def test_dockerfile_base_argument_and_offline_install() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}" in text
    assert "pip install --no-index --find-links /wheelhouse" in text
    # the dependency layer comes before the code, so editing code keeps it cached
    assert text.index("pip install --no-index") < text.index("COPY services")


def test_offline_override_is_generated_and_uses_our_netproxy() -> None:
    override = yaml.safe_load((ROOT / "docker" / "compose.offline.yml").read_text())
    server = override["services"]["netproxy"]
    assert server["image"] == "faultline:dev" and server["command"][:3] == ["python", "-m", "services.netproxy"]
    assert "127.0.0.1" in server["command"]
    assert (ROOT / "docker" / "compose.offline.yml").read_text() == composegen.offline_text()
    assert (ROOT / "docker" / "toxiproxy.offline.json").read_text() == composegen.toxiproxy_offline_text()
    user_file = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert user_file["services"]["netproxy"]["image"].startswith("ghcr.io/shopify/toxiproxy")


def test_no_engine_is_a_clear_error(tmp_path: Path) -> None:
    """With no docker, docker-compose or podman on PATH, the compose backend says what to install."""
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("DOCKER_HOST", None)
    r = subprocess.run([sys.executable, "-m", "lab.compose", "engine"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 1
    assert "no container engine with compose found" in r.stderr and "apt-get install podman docker-compose" in r.stderr
