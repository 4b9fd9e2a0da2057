"""LLM peer 2: LitServe streaming our weights as `transformers`' GPT-2, with its documented settings for this.

    python -m bench.peers.llm_litserve --port P --registry DIR [--version v1] [--max-batch-size 8]
        [--batch-timeout 0.05] [--workers 2]

`POST /v1/completions` (`stream=True`, `api_path`) on the model of bench/peers/llm_common.py. With
`max_batch_size` > 1 LitServe collects up to that many requests (waiting `batch_timeout` for company) and hands
them to `predict` as one batch; `predict` is a generator (LitServe's batched streaming): the prompts are
left-padded and decoded together with `transformers`' KV cache (`past_key_values`), one token per row per step,
until every row has finished; each step yields one SSE chunk per row. The batch is static — a request arriving
mid-batch waits for the next one — which is LitServe's design, not a choice made here. For CPU its docs advise a
worker per core (`workers_per_device`, 2 on the benchmark's machine) and ZeroMQ (`fast_queue`) above ~100 rps.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import litserve as ls
from fastapi import HTTPException

from bench.peers.llm_common import Completion


class LLMStreamAPI(ls.LitAPI):
    def __init__(self, registry: str, version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry, self.version = registry, version

    def setup(self, device: str) -> None:
        from bench.peers.llm_common import load  # in the inference worker: that is where torch belongs

        self.llm = load(self.registry, self.version, threads=1)

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        try:
            return Completion.parse(request, self.llm)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc

    def batch(self, inputs: list[Completion]) -> list[Completion]:
        return list(inputs)

    def predict(self, x: Any) -> Iterator[Any]:
        batched = isinstance(x, list)
        for step in self._generate(x if batched else [x]):
            yield step if batched else step[0]

    def _generate(self, reqs: list[Completion]) -> Iterator[list[str]]:
        import torch

        from bench.peers.llm_common import sample_rows
        from services.llm.tokenizer import StreamDecoder

        eos = self.llm.tokenizer.eos_id
        b, longest = len(reqs), max(len(r.prompt) for r in reqs)
        ids = torch.full((b, longest), eos, dtype=torch.long)
        mask = torch.zeros((b, longest), dtype=torch.long)
        for i, r in enumerate(reqs):  # left padding: every row's last prompt token in the last column
            ids[i, longest - len(r.prompt):] = torch.tensor(r.prompt)
            mask[i, longest - len(r.prompt):] = 1
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        temps = torch.tensor([r.temperature for r in reqs])
        top_ps = torch.tensor([r.top_p for r in reqs])
        decoders = [StreamDecoder() for _ in reqs]
        counts = [0] * b
        done = [False] * b
        with torch.inference_mode():
            out = self.llm.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
            while not all(done):
                nxt = sample_rows(out.logits[:, -1].float(), temps, top_ps)
                events = []
                for i, tok in enumerate(nxt.tolist()):
                    if done[i]:
                        events.append("")
                        continue
                    r = reqs[i]
                    finish = None
                    if tok == eos:
                        finish = "stop"
                        text = decoders[i].flush()
                    else:
                        counts[i] += 1
                        text = decoders[i].feed([tok])
                        if counts[i] >= r.max_tokens:
                            finish = "length"
                            text += decoders[i].flush()
                    event = r.chunk(text) if text else ""
                    if finish is not None:
                        done[i] = True
                        event += r.chunk("", finish) + r.closing(counts[i])
                    events.append(event)
                yield events
                if all(done):
                    break
                mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long)], dim=1)
                pos = pos[:, -1:] + 1
                out = self.llm.hf(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                                  past_key_values=out.past_key_values, use_cache=True)

    def encode_response(self, output: Any) -> Iterator[Any]:
        yield from output  # the chunks are SSE text already (a list of them per step when batching)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.llm_litserve", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.05, help="seconds LitServe waits to fill a batch")
    parser.add_argument("--workers", type=int, default=2, help="inference workers (LitServe: one per CPU core)")
    args = parser.parse_args(argv)
    api = LLMStreamAPI(args.registry, args.version, max_batch_size=args.max_batch_size,
                       batch_timeout=args.batch_timeout, stream=True, api_path="/v1/completions")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, timeout=120,
                          fast_queue=True)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
