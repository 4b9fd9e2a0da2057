"""LLM peer 1: Hugging Face `transformers` behind FastAPI — `generate` with a streamer, as its docs show it.

    python -m bench.peers.llm_transformers --port P --registry DIR [--version v1] [--threads 1]

Our weights in `GPT2LMHeadModel` (bench/peers/llm_common.py), `POST /v1/completions` with `stream: true`: each
request runs `model.generate(..., streamer=AsyncTextIteratorStreamer)` on a thread of its own (the pattern of
the `transformers` streaming docs; there is no batching across requests in `generate`), under
`torch.inference_mode`, with the KV cache on (`use_cache=True`) and torch's threads set like our engine's (1).
The route relays the streamer's text as OpenAI-shaped SSE chunks. Served by uvicorn with uvloop and httptools,
like our services, so the serving design is what differs.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bench.peers.llm_common import Completion, HFByteTokenizer, PeerLLM, load


def build_app(llm: PeerLLM) -> FastAPI:
    from transformers import AsyncTextIteratorStreamer

    app = FastAPI(title="bench peer: transformers generate + FastAPI")
    hf_tok = HFByteTokenizer(llm.tokenizer)
    eos = llm.tokenizer.eos_id

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        try:
            req = Completion.parse(await request.json(), llm)
        except ValueError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
        streamer = AsyncTextIteratorStreamer(hf_tok, skip_prompt=True)
        result: dict[str, int] = {}

        def generate() -> None:
            ids = torch.tensor([req.prompt])
            sampling: dict[str, Any] = {"do_sample": False}
            if req.temperature > 0:
                sampling = {"do_sample": True, "temperature": req.temperature, "top_p": req.top_p, "top_k": 0}
            with torch.inference_mode():
                out = llm.hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=req.max_tokens,
                                      eos_token_id=eos, pad_token_id=eos, use_cache=True, streamer=streamer,
                                      **sampling)
            new = out[0, len(req.prompt):].tolist()
            result["eos"] = int(bool(new) and new[-1] == eos)
            # the end-of-text token is not an output token (ours and LitServe count it so: usage, the benchmark)
            result["tokens"] = len(new) - result["eos"]

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()

        async def events() -> AsyncIterator[str]:
            async for text in streamer:
                if text:
                    yield req.chunk(text)
            thread.join()
            yield req.chunk("", "stop" if result.get("eos") else "length")
            yield req.closing(result.get("tokens", 0))

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.llm_transformers", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (our engine's default: 1)")
    args = parser.parse_args(argv)
    app = build_app(load(args.registry, args.version, args.threads))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools")
    return 0


if __name__ == "__main__":
    sys.exit(main())
