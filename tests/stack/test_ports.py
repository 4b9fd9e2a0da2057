"""Port planning and start-up failure messages: pure functions, no stack."""

from __future__ import annotations

import random

from lab.ports import BLOCK_SIZE, ephemeral_range, find_free_block
from lab.stack import last_error_line


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
    log = tmp_path / "registry.log"
    log.write_text(
        "INFO:     Started server process [12]\n"
        "INFO:     Waiting for application startup.\n"
        "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 20004): "
        "address already in use\n"
        "INFO:     Waiting for application shutdown.\n"
    )
    assert "address already in use" in last_error_line(log)
    log.write_text("INFO: all good\n")
    assert last_error_line(log) == ""
    assert last_error_line(tmp_path / "nope.log") == ""
