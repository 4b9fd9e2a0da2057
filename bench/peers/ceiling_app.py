"""The raw-ASGI ceiling: uvicorn + httptools + uvloop answering every POST with one fixed JSON body.

    python -m bench.peers.ceiling_app --port P

No framework, no model, no parsing of the body beyond reading it: the most a single Python process on this
stack can answer, measured by the same client in the same run as the servers under test. A server's rps over
this figure (`ratio_vs_ceiling`) says how much of the ceiling its own work leaves; the figure moves with the
machine's load, the ratio much less.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

# the size and shape of a one-row answer of the model server, so the response bytes match
BODY = (b'{"scores":[0.0123456789],"model_version":"v1","sha256":"' + b"0" * 64 + b'","replica":"bench",'
        b'"batch_size":1}')
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to set up
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = scope["method"] == "POST"
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.peers.ceiling_app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools", lifespan="off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
