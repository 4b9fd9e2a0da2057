"""The real `toxiproxy-python` client, and our wrapper around it, driving the embedded server end to end."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import toxiproxy
from toxiproxy.api import APIConsumer

from lab.toxiproxy import ServerChoice, ToxiproxyClient, ToxiproxyError, ToxiproxyUnavailable, select_server
from tests.netproxy.support import REPO, EchoServer, connect, free_port, recv_exactly, start_embedded, stop


@pytest.fixture
def package_client(embedded_url: str) -> Iterator[toxiproxy.Toxiproxy]:
    """The package's client pointed at our server through its class-wide global, restored afterwards."""
    saved = (APIConsumer.host, APIConsumer.port)
    server = toxiproxy.Toxiproxy()
    host, port = embedded_url.removeprefix("http://").rsplit(":", 1)
    server.update_api_consumer(host, int(port))
    yield server
    APIConsumer.host, APIConsumer.port = saved


@pytest.fixture
def ours(embedded_url: str) -> ToxiproxyClient:
    return ToxiproxyClient(embedded_url, timeout=5)


def unique() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def timed_round_trip(listen: str, payload: bytes = b"ping") -> float:
    with connect(listen) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        recv_exactly(sock, len(payload))
        return time.monotonic() - start


def test_package_client_end_to_end(package_client, echo_server) -> None:
    name = unique()
    assert package_client.running()
    assert package_client.version().startswith(b"{")  # the package returns the raw body
    proxy = package_client.create(upstream=echo_server.address, name=name)
    try:
        assert proxy.listen.startswith("127.0.0.1:") and proxy.enabled
        assert name in package_client.proxies()
        assert package_client.get_proxy(name).upstream == echo_server.address

        assert proxy.add_toxic(type="latency", attributes={"latency": 300}) is None
        toxic = proxy.get_toxic("latency_downstream")
        assert (toxic.type, toxic.stream, toxic.toxicity, toxic.attributes) == (
            "latency",
            "downstream",
            1.0,
            {"latency": 300, "jitter": 0},
        )
        assert timed_round_trip(proxy.listen) >= 0.298
        proxy.destroy_toxic("latency_downstream")
        assert proxy.toxics() == {}
        assert timed_round_trip(proxy.listen) < 0.25  # no longer delayed

        with proxy.down(), pytest.raises(OSError):
            connect(proxy.listen, timeout=1)
        assert timed_round_trip(proxy.listen) < 0.5

        proxy.add_toxic(type="timeout", stream="upstream", name="t", attributes={"timeout": 0})
        package_client.reset()
        assert proxy.toxics() == {}
        with pytest.raises(toxiproxy.exceptions.ProxyExists):
            package_client.create(upstream=echo_server.address, name=name)
    finally:
        package_client.destroy(proxy)
    assert package_client.get_proxy(name) is None


def test_package_populate_and_errors(package_client, echo_server) -> None:
    names = [unique(), unique()]
    listens = [f"127.0.0.1:{free_port()}" for _ in names]
    created = package_client.populate(
        [{"name": n, "listen": lsn, "upstream": echo_server.address} for n, lsn in zip(names, listens, strict=True)]
    )
    try:
        assert sorted(p.name for p in created) == sorted(names)
        assert timed_round_trip(listens[0]) < 0.5
        proxy = package_client.get_proxy(names[0])
        with pytest.raises(toxiproxy.exceptions.InvalidToxic):
            proxy.add_toxic(type="no_such_toxic")
        with pytest.raises(toxiproxy.exceptions.NotFound):
            proxy.destroy_toxic("nope")
    finally:
        for n in names:
            package_client.destroy(package_client.get_proxy(n))


def test_wrapper_full_cycle(ours, echo_server) -> None:
    name = unique()
    assert ours.version()
    created = ours.create_proxy(name, "127.0.0.1:0", echo_server.address)
    try:
        assert ours.get_proxy(name) == created
        assert ours.proxies()[name] == created
        toxic = ours.add_toxic(name, "latency", {"latency": 100, "jitter": 5}, stream="upstream")
        assert toxic["name"] == "latency_upstream"
        assert timed_round_trip(created["listen"]) >= 0.093
        updated = ours.update_toxic(name, "latency_upstream", {"latency": 10})
        assert updated["attributes"] == {"latency": 10, "jitter": 5} and updated["toxicity"] == 1.0
        updated = ours.update_toxic(name, "latency_upstream", toxicity=0.0)
        assert updated["attributes"]["latency"] == 10 and updated["toxicity"] == 0.0
        assert [t["name"] for t in ours.toxics(name)] == ["latency_upstream"]
        ours.remove_toxic(name, "latency_upstream")
        assert ours.toxics(name) == []

        down = ours.update_proxy(name, enabled=False)
        assert down["enabled"] is False
        with pytest.raises(OSError):
            connect(created["listen"], timeout=1)
        ours.add_toxic(name, "bandwidth", {"rate": 10})
        ours.reset()
        assert ours.get_proxy(name)["enabled"] is True and ours.toxics(name) == []

        kept = ours.populate([{"name": name, "listen": created["listen"], "upstream": echo_server.address}])
        assert kept[0]["listen"] == created["listen"]
    finally:
        ours.delete_proxy(name)
    with pytest.raises(ToxiproxyError) as err:
        ours.get_proxy(name)
    assert (err.value.status, err.value.message) == (404, "proxy not found")


def test_wrapper_raises_on_4xx_and_5xx(ours, echo_server) -> None:
    name = unique()
    ours.create_proxy(name, "127.0.0.1:0", echo_server.address)
    try:
        with pytest.raises(ToxiproxyError) as err:
            ours.create_proxy(name, "127.0.0.1:0", echo_server.address)
        assert (err.value.status, err.value.message) == (409, "proxy already exists")
        with pytest.raises(ToxiproxyError) as err:
            ours.add_toxic(name, "latency", stream="sideways")
        assert err.value.status == 400 and "stream was invalid" in err.value.message
        with pytest.raises(ToxiproxyError) as err:
            ours.update_toxic(name, "missing", {"latency": 1})
        assert (err.value.status, err.value.message) == (404, "toxic not found")
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            with pytest.raises(ToxiproxyError) as err:
                ours.create_proxy(unique(), f"127.0.0.1:{busy.getsockname()[1]}", echo_server.address)
            assert err.value.status == 500 and "address already in use" in err.value.message
            with pytest.raises(ToxiproxyError) as err:
                ours.populate(
                    [
                        {
                            "name": unique(),
                            "listen": f"127.0.0.1:{busy.getsockname()[1]}",
                            "upstream": echo_server.address,
                        }
                    ]
                )
            assert err.value.status == 500 and err.value.body["proxies"] == []
    finally:
        ours.delete_proxy(name)


def test_wrapper_instances_have_their_own_server_and_leave_the_global_alone(embedded_url) -> None:
    before = (APIConsumer.host, APIConsumer.port)
    good = ToxiproxyClient(embedded_url, timeout=2)
    bad = ToxiproxyClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert good.version()
    with pytest.raises(ToxiproxyUnavailable) as err:
        bad.version()
    assert err.value.status == 503
    assert good.version()
    assert (APIConsumer.host, APIConsumer.port) == before


def test_wrapper_times_out_on_a_silent_server() -> None:
    silent = EchoServer(lambda conn: time.sleep(5))  # accepts, never answers
    try:
        start = time.monotonic()
        with pytest.raises(ToxiproxyUnavailable) as err:
            ToxiproxyClient(f"http://{silent.address}", timeout=0.3).proxies()
        assert time.monotonic() - start < 3
        assert "no answer within 0.3s" in err.value.message
        with pytest.raises(ToxiproxyUnavailable):
            ToxiproxyClient(f"http://{silent.address}", timeout=0.2).wait_ready(timeout=0.5)
    finally:
        silent.close()


def test_wrapper_rejects_a_bad_url() -> None:
    with pytest.raises(ValueError):
        ToxiproxyClient("127.0.0.1:8474")


def test_select_server_order() -> None:
    assert select_server(env={"TOXIPROXY_URL": "http://127.0.0.1:9999/"}) == ServerChoice(
        "external", "http://127.0.0.1:9999", None
    )
    binary = select_server(port=20474, config="/tmp/p.json", env={}, which=lambda _: "/usr/bin/toxiproxy-server")
    assert binary == ServerChoice(
        "binary",
        "http://127.0.0.1:20474",
        ["/usr/bin/toxiproxy-server", "-host", "127.0.0.1", "-port", "20474", "-config", "/tmp/p.json"],
    )
    embedded = select_server(port=20474, env={}, which=lambda _: None, python="/py")
    assert embedded == ServerChoice(
        "embedded",
        "http://127.0.0.1:20474",
        ["/py", "-m", "services.netproxy", "--host", "127.0.0.1", "--port", "20474"],
    )
    forced = select_server(env={"TOXIPROXY_URL": "http://x:1"}, which=lambda _: "/bin/t", prefer="embedded")
    assert forced.kind == "embedded"
    with pytest.raises(FileNotFoundError):
        select_server(env={}, which=lambda _: None, prefer="binary")


def test_embedded_server_populates_from_a_config_file(tmp_path, echo_server) -> None:
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "proxies.json"
    config.write_text(f'[{{"name": "gateway", "listen": "{listen}", "upstream": "{echo_server.address}"}}]')
    port = free_port()
    proc = start_embedded(port, "--config", str(config))
    try:
        client = ToxiproxyClient(f"http://127.0.0.1:{port}")
        assert client.get_proxy("gateway")["listen"] == listen
        assert timed_round_trip(listen) < 0.5
    finally:
        log = stop(proc)
    assert "config applied" in log and "proxies=1" in log


def test_embedded_server_refuses_a_port_in_use_and_a_public_host() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        choice = select_server(port=busy.getsockname()[1], prefer="embedded")
        assert choice.argv is not None
        done = subprocess.run(choice.argv, capture_output=True, timeout=30, cwd=REPO)
    assert done.returncode == 1 and b"cannot listen" in done.stderr
    done = subprocess.run([*choice.argv[:3], "--host", "0.0.0.0"], capture_output=True, timeout=30, cwd=REPO)
    assert done.returncode == 2 and b"loopback" in done.stderr


def test_wrapper_calls_do_not_wait_for_stalled_data(ours, echo_server) -> None:
    name = unique()
    listen = ours.create_proxy(name, "127.0.0.1:0", echo_server.address)["listen"]
    try:
        ours.add_toxic(name, "latency", {"latency": 5000}, name="lag")
        sock = connect(listen)
        sock.sendall(b"stuck")
        results: list[float] = []

        def change() -> None:
            start = time.monotonic()
            ours.update_toxic(name, "lag", {"latency": 6000})
            ours.remove_toxic(name, "lag")
            results.append(time.monotonic() - start)

        worker = threading.Thread(target=change)
        worker.start()
        worker.join(5)
        assert results and results[0] < 1.0
        assert recv_exactly(sock, 5) == b"stuck"
        sock.close()
    finally:
        ours.delete_proxy(name)


def test_netproxy_imports_only_the_standard_library() -> None:
    """services/netproxy must stay light: no torch, no web framework, never `lab`."""
    code = (
        "import sys, services.netproxy.__main__, services.netproxy.api;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'fastapi', 'starlette', 'pydantic', "
        "'numpy', 'lab', 'requests', 'httpx'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
