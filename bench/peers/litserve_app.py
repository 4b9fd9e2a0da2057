"""Peer 2: LitServe serving the same artifact (POST /predict {"rows": [...]} -> {"scores": [...]}).

    python -m bench.peers.litserve_app --port P --registry DIR [--version v1] [--max-batch-size N --batch-timeout S]
        [--workers N] [--fast-queue] [--tuned-http]

LitServe's defaults (one inference worker, one API server process, no batching, access log on) unless told
otherwise. What its own docstrings recommend on CPU: `--workers` = cores (`workers_per_device`; it starts as many
API server processes), `--fast-queue` (its ZeroMQ transport, "above 100 rps"), and dynamic batching
(`--max-batch-size`/`--batch-timeout`); `--tuned-http` adds what any uvicorn deployment does (no access log,
httptools + uvloop) and answers with orjson-encoded bytes instead of FastAPI's jsonable_encoder walk.
`bench serving` sweeps these and runs the best. A request's rows are scored together; with batching, LitServe
stacks several requests' rows into one pass.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import litserve as ls
import orjson
from fastapi import HTTPException
from fastapi.responses import Response

from services.trainer.transform import RowError


class FraudAPI(ls.LitAPI):
    def __init__(self, registry: str, version: str, orjson_response: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self.version = version
        self.orjson_response = orjson_response

    def setup(self, device: str) -> None:
        from bench.peers.model import load  # in the inference worker: that is where torch belongs

        self.model = load(self.registry, self.version)

    # no annotations on decode_request/encode_response: LitServe builds its FastAPI route from them, and an
    # unannotated `request` gets the JSON body (annotations are strings here, which FastAPI would misread)
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        rows = request.get("rows") if isinstance(request, dict) else None
        if not isinstance(rows, list) or not rows:
            raise HTTPException(status_code=422, detail="rows: must be a non-empty list of objects")
        return rows

    def predict(self, x: list[Any]) -> Any:
        if x and isinstance(x[0], list):  # a batch of requests: one pass over all their rows
            flat = [row for rows in x for row in rows]
            try:
                scores = self.model.scores(flat)
            except RowError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from exc
            out, offset = [], 0
            for rows in x:
                out.append(scores[offset : offset + len(rows)])
                offset += len(rows)
            return out
        try:
            return self.model.scores(x)
        except RowError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        body = {"scores": output, "model_version": self.model.version, "sha256": self.model.sha256}
        if self.orjson_response:  # bytes, ready to send: FastAPI returns a Response as it is
            return Response(orjson.dumps(body), media_type="application/json")
        return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.litserve_app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--batch-timeout", type=float, default=0.0, help="seconds LitServe waits to fill a batch")
    parser.add_argument("--workers", type=int, default=1, help="workers_per_device (and as many API servers)")
    parser.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ transport")
    parser.add_argument("--tuned-http", action="store_true",
                        help="no access log, httptools + uvloop, orjson-encoded responses")
    args = parser.parse_args(argv)
    api = FraudAPI(args.registry, args.version, orjson_response=args.tuned_http, max_batch_size=args.max_batch_size,
                   batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, timeout=30,
                          fast_queue=args.fast_queue)
    http: dict[str, Any] = {"access_log": False, "http": "httptools", "loop": "uvloop"} if args.tuned_http else {}
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False, **http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
