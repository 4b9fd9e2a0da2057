"""Peer 1: the plain FastAPI endpoint — one request, one forward pass, no batching, no queue.

    python -m bench.peers.fastapi_app --port P --registry DIR [--version v1] [--workers N]

What most teams write first: a pydantic request model, an `async def` route that scores its rows inline. Served
by the same uvicorn stack as our services (uvloop, httptools, no access log), so only the serving design differs.
`--workers N` runs uvicorn's N worker processes on one socket (each loads the model, one torch thread each): on
2 cores, 2 workers is this design at its best, which `bench serving` finds by trying both.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from bench.peers.model import load
from services.trainer.transform import RowError


class PredictBody(BaseModel):
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=1024)


def build_app(registry: str, version: str) -> FastAPI:
    model = load(registry, version)
    app = FastAPI(title="bench peer: plain FastAPI")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(body: PredictBody) -> dict[str, Any]:
        try:
            scores = model.scores(body.rows)
        except RowError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return {"scores": scores, "model_version": model.version, "sha256": model.sha256}

    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory for `--workers N`: each worker process builds its own app from the environment."""
    return build_app(os.environ["BENCH_PEER_REGISTRY"], os.environ["BENCH_PEER_VERSION"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.fastapi_app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    common: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": "warning", "access_log": False,
                              "loop": "uvloop", "http": "httptools"}
    if args.workers > 1:
        os.environ["BENCH_PEER_REGISTRY"], os.environ["BENCH_PEER_VERSION"] = args.registry, args.version
        uvicorn.run("bench.peers.fastapi_app:app_from_env", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(build_app(args.registry, args.version), **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
