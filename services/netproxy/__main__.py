"""Run the embedded Toxiproxy-compatible server: `python -m services.netproxy --host 127.0.0.1 --port 8474`.

`main(argv)` is also what `faultline netproxy` calls. Flags mirror toxiproxy-server's (`-host`, `-port`,
`-config`, `-seed`) in long-option form. The server only binds loopback addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import random
import signal
import sys
import time

from services.netproxy import VERSION
from services.netproxy.api import Api
from services.netproxy.collection import ProxyCollection
from services.netproxy.errors import ApiError
from services.netproxy.httpserver import serve

log = logging.getLogger("netproxy")


class UTCFormatter(logging.Formatter):
    """Faultline's log line: `2026-11-26T10:00:00.123Z LEVEL name message key=value` (stdlib-only copy)."""

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UTCFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="netproxy", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="API address (loopback only; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8474, help="API port (default 8474)")
    parser.add_argument("--config", help="JSON file with an array of proxies to create at start (like /populate)")
    parser.add_argument("--seed", type=int, help="seed for toxicity and jitter draws (reproducible runs)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    host = "127.0.0.1" if args.host == "localhost" else args.host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        parser.error(f"--host must be a loopback address (127.0.0.1, ::1 or localhost), got {args.host!r}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    args.host = host
    return args


async def populate_from_file(collection: ProxyCollection, path: str) -> None:
    """Like toxiproxy-server -config: a bad file is logged and the server runs on without those proxies."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as exc:
        log.error("cannot read config file=%s error=%s", path, exc)
        return
    try:
        proxies, error = await collection.populate(entries)
    except ApiError as exc:
        log.error("config rejected file=%s error=%s", path, exc.message)
        return
    if error is not None:
        log.error("config partly applied file=%s proxies=%d error=%s", path, len(proxies), error.message)
    else:
        log.info("config applied file=%s proxies=%d", path, len(proxies))


async def run(args: argparse.Namespace) -> int:
    collection = ProxyCollection()
    api = Api(collection)
    try:
        server = await serve(api.handle, args.host, args.port)
    except OSError as exc:
        log.error("cannot listen host=%s port=%d error=%s", args.host, args.port, exc.strerror or exc)
        return 1
    port = server.sockets[0].getsockname()[1]
    if args.config:
        await populate_from_file(collection, args.config)
    log.info("API listening version=%s host=%s port=%d", VERSION, args.host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down proxies=%d", len(collection.proxies))
    server.close()
    collection.clear()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    if args.seed is not None:
        random.seed(args.seed)
    try:
        import uvloop
    except ImportError:  # the stdlib loop works too, just with more overhead per hop
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
