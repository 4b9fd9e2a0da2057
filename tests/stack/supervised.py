"""Helper for test_supervisor: a supervisor with two HTTP servers; prints their pids, then waits to be killed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lab.process import ServiceSpec
from lab.supervisor import Supervisor


def main() -> None:
    logs, ports = Path(sys.argv[1]), sys.argv[2:]
    sup = Supervisor(logs).start()
    for i, port in enumerate(ports):
        sup.add(ServiceSpec(f"web-{i}", [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1"],
                            url=f"http://127.0.0.1:{port}", ready_path="/"))
    if sup.wait_ready(sup.names(), 20):
        sys.exit("not ready")
    print(json.dumps({"pids": [s["pid"] for s in sup.status()]}), flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
