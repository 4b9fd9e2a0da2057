"""Port planning and start-up failure messages, without a stack."""

from __future__ import annotations

import random
import sys

from kit import wait_until

from lab.ports import BLOCK_SIZE, ephemeral_range, find_free_block
from lab.process import RestartPolicy, ServiceSpec
from lab.stack import last_error_line
from lab.supervisor import Supervisor


def test_ephemeral_range_reads_the_kernel_file_and_falls_back(tmp_path):
    f = tmp_path / "range"
    f.write_text("40000\t50000\n")
    assert ephemeral_range(str(f)) == (40000, 50000)
    assert ephemeral_range(str(tmp_path / "missing")) == (32768, 60999)
    f.write_text("junk")
    assert ephemeral_range(str(f)) == (32768, 60999)


def test_free_blocks_stay_below_the_ephemeral_range():
    # an outgoing connection can take any ephemeral port between our check and a service's bind
    eph_low, _ = ephemeral_range()
    for seed in range(30):
        ports = find_free_block(2, rng=random.Random(seed))
        assert ports.base + BLOCK_SIZE <= eph_low or eph_low - 20000 < 20 * BLOCK_SIZE


def test_last_error_line_names_why_a_service_died(tmp_path):
    # a service that dies the way uvicorn does when its port is taken: its own error line is quoted, not the
    # supervisor's "[faultline] exited code=3 reason=Error" that follows it
    bind_error = ("ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 20004): "
                  "address already in use")
    script = f"print('INFO:     Started server process'); print({bind_error!r}); " \
             "print('INFO:     Waiting for application shutdown.'); raise SystemExit(3)"
    sup = Supervisor(tmp_path / "logs").start()
    try:
        sup.add(ServiceSpec("registry", [sys.executable, "-c", script], ready_path=None,
                            restart=RestartPolicy("no")))
        sup.add(ServiceSpec("quiet", [sys.executable, "-c", "print('INFO: all good')"], ready_path=None,
                            restart=RestartPolicy("no")))
        wait_until(lambda: all(sup.service_status(n)["state"] == "exited" for n in ("registry", "quiet")), 20)
        assert any("reason=Error" in x["line"] for x in sup.logs("registry"))
        assert last_error_line(sup, "registry") == bind_error
        assert last_error_line(sup, "quiet") == ""
    finally:
        sup.shutdown(grace_s=2)
