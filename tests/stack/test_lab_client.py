"""lab/client.py against real endpoints: the running lab's refusals keep its message and status; a port nobody
listens on, a server that never answers and a page that is not JSON each become one clear LabError; the CLIs
(`faultline`, its console commands, `faultline run`) print the message with exit code 1 and no traceback.
"""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest

from lab.client import LabClient, LabError, api, find_lab
from lab.ports import free_port


@pytest.fixture
def no_lab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Find the lab only through the flags and HOME/lab.json, whatever the caller's shell exports."""
    monkeypatch.delenv("FAULTLINE_LAB_URL", raising=False)
    monkeypatch.delenv("FAULTLINE_TOKEN", raising=False)


@pytest.mark.stack
def test_the_labs_refusals_keep_its_message_and_status(stack, no_lab_env):
    with LabClient(stack.lab_url, timeout=30) as client:
        assert client.call("GET", "/api/health")["status"] == "ok"

        with pytest.raises(LabError) as unknown:
            client.call("GET", "/api/services/nope/logs")
        assert unknown.value.status == 404 and "no service named 'nope'" in unknown.value.message
        assert str(unknown.value) == f"GET /api/services/nope/logs: 404 {unknown.value.message}"

        with pytest.raises(LabError) as invalid:  # pydantic's list of problems, as JSON text
            client.call("POST", "/api/scale", {"replicas": "many"})
        assert invalid.value.status == 422
        problems = json.loads(invalid.value.message)
        assert isinstance(problems, list) and problems[0]["loc"][-1] == "replicas"

        # a status the caller expects is an answer, not an error
        assert "no service named" in client.call("GET", "/api/services/nope/logs", allow=(404,))["detail"]

        with pytest.raises(LabError, match="not JSON") as html:
            client.call("GET", "/docs")
        assert html.value.status is None


@pytest.mark.stack
def test_api_finds_the_lab_through_its_home(stack, no_lab_env):
    flags = SimpleNamespace(home=str(stack.home), lab_url=None)
    assert find_lab(stack.home) == stack.lab_url
    assert api(flags, "GET", "/api/status", timeout=30)["supervisor_pid"] == stack.lab_pid
    with pytest.raises(LabError) as err:
        api(flags, "POST", "/api/services/nope/restart", timeout=30)
    assert err.value.status == 404 and err.value.request == "POST /api/services/nope/restart"


def test_no_lab_in_home_says_how_to_start_one(tmp_path, no_lab_env):
    with pytest.raises(LabError) as err:
        find_lab(tmp_path)
    assert err.value.status is None
    assert str(err.value) == f"no lab is running for {tmp_path.resolve()} — start one with `faultline up -d`"


def test_nothing_listening_means_no_lab_is_running_there(no_lab_env):
    url = f"http://127.0.0.1:{free_port()}"
    with LabClient(url, timeout=10) as client, pytest.raises(LabError) as err:
        client.call("GET", "/api/status")
    assert err.value.status is None
    assert err.value.message == f"no lab is running at {url}; start one with `faultline up -d`"


def test_a_server_that_never_answers_is_reported_as_such(no_lab_env):
    # a listening socket nobody accepts from: the connection opens (the kernel's backlog), no answer ever comes
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with LabClient(url, timeout=0.5) as client, pytest.raises(LabError) as err:
            client.call("GET", "/api/status")
    assert err.value.status is None
    assert err.value.message.startswith(f"the lab at {url} did not answer GET /api/status")


def test_the_clis_print_the_message_without_a_traceback(faultline_cli, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    expected = f"no lab is running at {url}; start one with `faultline up -d`"
    for args in (["status", "--lab-url", url], ["attempt", "status", "--lab-url", url, "some-attempt"],
                 ["deploys", "--lab-url", url], ["run", "slow-replica", "--lab-url", url]):
        proc = faultline_cli(*args, "--home", str(tmp_path), timeout=60)
        assert proc.returncode == 1, (args, proc.stderr)
        assert expected in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


@pytest.mark.stack
def test_the_clis_print_the_labs_own_words(stack):
    for args in (["logs", "nope"], ["attempt", "status", "no-such-attempt"], ["config", "show", "nope"]):
        proc = stack.cli(*args, timeout=60)
        assert proc.returncode == 1, (args, proc.stderr)
        line = proc.stderr.strip()
        # the lab's message alone: no request line or status in front, no traceback
        assert line.startswith("faultline: ") and "/api/" not in line and "Traceback" not in line, (args, line)
