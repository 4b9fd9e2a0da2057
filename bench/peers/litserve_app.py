"""Peer 2: LitServe serving the same artifact (POST /predict {"rows": [...]} -> {"scores": [...]}).

    python -m bench.peers.litserve_app --port P --registry DIR [--version v1] [--max-batch-size N --batch-timeout S]

LitServe's defaults (one inference worker, one API server process, no batching) unless told otherwise;
`--max-batch-size`/`--batch-timeout` turn on its dynamic batching for the "LitServe, batching" comparison.
A request's rows are scored together; with batching, LitServe stacks several requests' rows into one pass.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import litserve as ls
from fastapi import HTTPException

from services.trainer.transform import RowError


class FraudAPI(ls.LitAPI):
    def __init__(self, registry: str, version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self.version = version

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
        return {"scores": output, "model_version": self.model.version, "sha256": self.model.sha256}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.litserve_app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--batch-timeout", type=float, default=0.0, help="seconds LitServe waits to fill a batch")
    args = parser.parse_args(argv)
    api = FraudAPI(args.registry, args.version, max_batch_size=args.max_batch_size,
                   batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
