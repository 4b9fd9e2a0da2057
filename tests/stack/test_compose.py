"""docker-compose.yml, checked without a Docker engine: it is what `python -m lab.compose generate` writes from the
part declarations, it validates against the Compose Specification schema, and its services, commands, ports,
proxies, limits and healthchecks agree with the process backend (the same lab/topology.py and lab/specs.py the
supervisor runs), compared programmatically."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from lab import composegen, parts, specs
from lab.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
# The Compose Specification's JSON schema, as the last Python release of docker-compose ships it (a pinned PyPI
# package, downloaded once into the venv: the schema is not copied into this repository).
SCHEMA_PACKAGE = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"


def _compose_schema() -> dict:
    cache = Path(sys.prefix) / "share" / "faultline-test-data"
    wheels = sorted(cache.glob("docker_compose-1.29.2-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--disable-pip-version-check",
                        "-d", str(cache), SCHEMA_PACKAGE], check=True, timeout=300)
        wheels = sorted(cache.glob("docker_compose-1.29.2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        return json.loads(wheel.read(SCHEMA_MEMBER))


SCHEMA = _compose_schema()
TOPOLOGY = Topology(tracks=parts.TRACKS)  # compose runs the default ports, two replicas, every track
IN_CONTAINER = specs.StackSettings(home=Path("/data"), python="python")
PY_SERVICES = [n for n in specs.service_names(TOPOLOGY) if n != "netproxy"]


def _bytes(limit: str | int) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)b?", str(limit).lower())
    assert m, f"unparsable mem_limit {limit!r}"
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2)]


def test_committed_files_are_generated_from_the_part_declarations():
    """docker-compose.yml and docker/toxiproxy.json are what `python -m lab.compose generate` writes now."""
    stale = composegen.generate(ROOT, check=True)
    assert stale == [], f"stale: {[str(p) for p in stale]} — run `python -m lab.compose generate`"


def test_check_names_a_stale_file_and_generate_rewrites_it(tmp_path):
    (tmp_path / "docker").mkdir()
    for path, text in composegen.generated(ROOT).items():
        (tmp_path / path.relative_to(ROOT)).write_text(text)
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(compose_file.read_text().replace("mem_limit: 384m", "mem_limit: 999m"))
    assert composegen.generate(tmp_path, check=True) == [compose_file]
    assert "999m" in compose_file.read_text()  # --check only compares
    assert composegen.generate(tmp_path) == [compose_file]
    assert composegen.generate(tmp_path, check=True) == []
    proc = subprocess.run([sys.executable, "-m", "lab.compose", "generate", "--check"], capture_output=True,
                          text=True, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_netproxy_restarts_on_failure_like_the_embedded_backend():
    assert COMPOSE["services"]["netproxy"]["restart"] == "on-failure"
    assert specs.service_spec("netproxy", TOPOLOGY, IN_CONTAINER).restart.mode == "on-failure"


def test_validates_against_the_compose_specification():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(COMPOSE)


def test_the_schema_check_would_catch_a_bad_file():
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["gateway"]["mem_limt"] = "1g"  # a typo
    with pytest.raises(jsonschema.ValidationError, match="mem_limt"):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)


def test_same_services_as_the_process_backend():
    assert set(COMPOSE["services"]) - {"models", "loadgen"} == set(specs.service_names(TOPOLOGY))


def test_a_plain_up_is_the_fraud_track_and_the_llm_track_is_behind_its_profile():
    fraud = set(specs.service_names(Topology()))
    plain = {n for n, svc in COMPOSE["services"].items() if "profiles" not in svc} - {"models"}
    assert plain == fraud
    llm = Topology(tracks=("llm",)).instances(parts.replica_part("llm"))
    assert llm and all(COMPOSE["services"][n]["profiles"] == ["llm"] for n in llm)
    # The gateway dials the LLM replicas but does not wait for them: they may be off (no profile).
    assert "--llm" in COMPOSE["services"]["gateway"]["command"]
    assert not set(llm) & set(COMPOSE["services"]["gateway"]["depends_on"])


def test_traffic_is_the_process_backends_load_generator_behind_a_profile():
    svc = COMPOSE["services"]["loadgen"]
    argv = svc["command"]
    rps, profile = float(argv[argv.index("--rps") + 1]), argv[argv.index("--profile") + 1]
    spec = specs.loadgen_spec(TOPOLOGY, IN_CONTAINER, rps, profile)
    assert argv == spec.argv and svc["profiles"] == ["traffic"]  # like the process backend: no traffic by default
    assert _bytes(svc["mem_limit"]) == spec.memory_limit_bytes
    assert f"'{spec.url}{spec.ready_path}'" in " ".join(svc["healthcheck"]["test"])
    assert svc["network_mode"] == "service:netproxy"


@pytest.mark.parametrize("name", PY_SERVICES)
def test_command_is_the_process_backends_argv(name):
    svc = COMPOSE["services"][name]
    assert svc["command"] == specs.service_argv(name, TOPOLOGY, IN_CONTAINER)
    # Shared network namespace: 127.0.0.1 and every port mean what they mean in the process backend.
    assert svc["network_mode"] == "service:netproxy"
    assert svc["build"]["dockerfile"] == "docker/Dockerfile"


@pytest.mark.parametrize("name", specs.service_names(TOPOLOGY))
def test_memory_limit_matches_the_supervisors(name):
    assert _bytes(COMPOSE["services"][name]["mem_limit"]) == specs.memory_limit_for(name)


@pytest.mark.parametrize("name", specs.service_names(TOPOLOGY))
def test_restart_policy_matches_the_supervisors(name):
    # the netproxy too: every container shares its network namespace (issue 12, finding 5)
    assert COMPOSE["services"][name].get("restart") == specs.restart_policy_for(name, IN_CONTAINER)


@pytest.mark.parametrize("name", PY_SERVICES)
def test_healthcheck_probes_the_same_readiness_url(name):
    spec = specs.service_spec(name, TOPOLOGY, IN_CONTAINER)
    test = COMPOSE["services"][name]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert f"'{spec.url}{spec.ready_path}'" in " ".join(test)


def test_toxiproxy_is_the_real_image_with_every_hop_of_the_topology():
    net = COMPOSE["services"]["netproxy"]
    assert net["image"].startswith("ghcr.io/shopify/toxiproxy:2.")
    assert f"-port={TOPOLOGY.ports.netproxy}" in net["command"]
    mount = next(v for v in net["volumes"] if v.startswith("./docker/toxiproxy.json:"))
    config_path = mount.split(":")[1]
    assert f"-config={config_path}" in net["command"]

    proxies = json.loads((ROOT / "docker" / "toxiproxy.json").read_text())
    by_name = {p["name"]: p for p in proxies}
    assert list(by_name) == [h.name for h in TOPOLOGY.hops()]
    for hop in TOPOLOGY.hops():
        p = by_name[hop.name]
        assert p["upstream"] == hop.upstream and p["enabled"] is True
        host, port = p["listen"].rsplit(":", 1)
        assert int(port) == hop.listen_port
        # Only the public entry point listens beyond the shared loopback (to be published to the host).
        assert host == ("0.0.0.0" if hop.name == "gateway" else TOPOLOGY.host)


def test_published_ports_are_the_public_proxy_and_the_toxiproxy_api_on_host_loopback():
    published = COMPOSE["services"]["netproxy"]["ports"]
    expected = {TOPOLOGY.ports.gateway_proxy, TOPOLOGY.ports.netproxy}
    assert {int(p.split(":")[1]) for p in published} == expected
    assert all(p.startswith("127.0.0.1:") and p.split(":")[1] == p.split(":")[2] for p in published)
    assert all("ports" not in COMPOSE["services"][n] for n in PY_SERVICES)


def test_gateway_starts_after_its_upstreams_are_healthy_and_models_are_trained():
    deps = COMPOSE["services"]["gateway"]["depends_on"]
    for name in ["netproxy", "feature-store", *TOPOLOGY.model_names()]:
        assert deps[name]["condition"] == "service_healthy"
    models = COMPOSE["services"]["models"]
    assert models["command"][:3] == ["python", "-m", "services.trainer"]
    for name in TOPOLOGY.model_names():
        assert COMPOSE["services"][name]["depends_on"]["models"]["condition"] == "service_completed_successfully"


def test_dockerfile_builds_the_python_services():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M) and "FROM ${BASE_IMAGE}" in text
    assert "requirements.lock" in text and "requirements-image.txt" in text


def test_compose_backend_without_docker_is_a_clear_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "up", "--backend", "compose"], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), timeout=60)
    assert proc.returncode == 1
    assert "no container engine with compose found" in proc.stderr and "faultline up" in proc.stderr
