"""The launch plan and the port plan, without starting anything: every address a service dials is a proxy from
the topology, each service listens where the topology says, overrides apply, and port errors are clear."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lab import specs
from lab.ports import PortInUse, check_free, find_free_block, is_free, stack_ports
from lab.topology import Ports, Topology

SETTINGS = specs.StackSettings(home=Path("/srv/fl"), python="py")
# The entrypoints docs/architecture.md names.
MODULES = {"gateway": "services.gateway", "feature-store": "services.featurestore", "registry": "services.registry",
           "netproxy": "services.netproxy"}


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("replicas", [1, 2, 5])
def test_the_gateway_dials_only_proxies(replicas):
    topo = Topology(ports=Ports(base=31000, netproxy=31098, lab=31099), replicas=replicas)
    argv = specs.service_argv("gateway", topo, SETTINGS)
    assert _flag(argv, "--feature-store") == topo.hop("feature-store").url
    models = dict(part.split("=", 1) for part in _flag(argv, "--models").split(","))
    assert models == {name: topo.hop(name).url for name in topo.model_names()} == specs.gateway_replicas(topo)
    listens = {h.url for h in topo.hops()}
    assert all(url in listens for url in models.values())


def test_every_service_listens_on_its_topology_port_and_probes_itself():
    topo = Topology(ports=Ports(base=31000, netproxy=31098, lab=31099), replicas=3)
    for name in specs.service_names(topo):
        spec = specs.service_spec(name, topo, SETTINGS)
        module = "services.modelserver" if name.startswith("model-") else MODULES[name]
        assert spec.argv[:3] == ["py", "-m", module]
        port = topo.ports.netproxy if name == "netproxy" else topo.service_port(name)
        assert _flag(spec.argv, "--port") == str(port) and _flag(spec.argv, "--host") == "127.0.0.1"
        assert spec.url == f"http://127.0.0.1:{port}"  # readiness goes to the service, never through a proxy
    model = specs.service_spec("model-3", topo, SETTINGS).argv
    assert _flag(model, "--replica") == "model-3" and _flag(model, "--registry") == "/srv/fl/registry"
    assert _flag(specs.service_spec("feature-store", topo, SETTINGS).argv, "--db") == "/srv/fl/featurestore.db"


def test_overrides_config_limits_policies_and_a_toxiproxy_binary():
    s = specs.StackSettings(home=Path("/h"), python="py", service_config={"model": {"max_batch_size": 4}},
                            memory_limits={"gateway": 123}, restart_policies={"model": "always"},
                            netproxy_argv=["/usr/bin/toxiproxy-server", "-port", "9"])
    topo = Topology()
    assert _flag(specs.service_argv("model-2", topo, s), "--config") == '{"max_batch_size":4}'
    assert "--config" not in specs.service_argv("gateway", topo, s)
    assert specs.service_spec("gateway", topo, s).memory_limit_bytes == 123
    assert specs.service_spec("model-1", topo, s).restart.mode == "always"
    assert specs.service_spec("registry", topo, s).restart.mode == "on-failure"
    assert specs.service_argv("netproxy", topo, s) == ["/usr/bin/toxiproxy-server", "-port", "9"]
    with pytest.raises(ValueError, match="restart policy"):
        specs.service_spec("gateway", topo, specs.StackSettings(home=Path("/h"), restart_policy="sometimes"))


def test_port_in_use_names_the_port_the_role_and_the_flag():
    ports = find_free_block()
    topo = Topology(ports=ports)
    assert all(is_free(u.port) for u in stack_ports(topo))
    for port, role, flag in [(ports.registry, "registry", "--base-port"), (ports.netproxy, "netproxy",
                                                                            "--netproxy-port"),
                             (ports.lab, "lab", "--lab-port")]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            s.listen()
            with pytest.raises(PortInUse) as err:
                check_free(stack_ports(topo))
        assert f"port {port} ({role}) is already in use" in str(err.value) and flag in str(err.value)


def test_the_gateway_starts_at_the_served_versions_calibrated_threshold(tmp_path: Path) -> None:
    import json

    meta = tmp_path / "registry" / "versions" / "v3" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"version": "v3", "metrics": {"threshold": 0.612}}))
    topo = Topology(ports=Ports(base=31000, netproxy=31098, lab=31099), replicas=2)

    def config(**kw) -> dict:
        argv = specs.service_argv("gateway", topo, specs.StackSettings(home=tmp_path, python="py", **kw))
        return json.loads(_flag(argv, "--config")) if "--config" in argv else {}

    assert config(model_versions=["v3"]) == {"decision_threshold": 0.612}
    # the caller's own start-up config is merged, and wins
    assert config(model_versions=["v3"], service_config={"gateway": {"max_retries": 1}}) == {
        "decision_threshold": 0.612, "max_retries": 1}
    assert config(model_versions=["v3"], service_config={"gateway": {"decision_threshold": 0.3}}) == {
        "decision_threshold": 0.3}
    # no meta for the served version (a compose file's container paths): the service's own default applies
    assert config(model_versions=["v9"]) == {}
