"""The console's LLM-track operations: `generate` and `eval`, and the LLM sides of metrics, deploys and rollouts.

`generate` streams one completion through the gateway (its own port: the path a client's request takes past the
gateway, the replicas' hops included) or to one replica, and measures what a client would: time to first token,
the gaps between tokens, tokens per second. `eval` asks every replica for the perplexity its model gives a fixed
held-out text (completions with `echo` and `logprobs`): a broken or swapped model shows as a far higher figure.

An LLM replica loads one version (weights, tokenizer and generation config together) when it starts and cannot
swap it live: a rollout sets the version in each replica's start-up arguments and restarts the replicas one at a
time, each becoming ready before the next goes (the others keep serving).
"""

from __future__ import annotations

import json
import time
from typing import Any

from lab import parts
from lab.console.base import ConsoleContext, ConsoleError, OpResult, num, operation, table
from lab.parts.client import PartError
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.llm import TRACK, stream_completion
from lab.stackclients import ServiceCallError

# Not in the LLM's training text (services/llm/corpus.py: the King James Bible, or a generated English corpus): an
# invented sentence in the same plain English, under 256 bytes (the byte-level model's context), so a healthy model
# scores it far better than chance (256 choices a byte) and a broken one does not.
EVAL_TEXT = ("And the men of the city went out into the field at evening, and they found the well that their "
             "fathers had digged, and they rested there until the morning.")
GENERATE_TIMEOUT_S = 60.0
ROLLOUT_READY_S = 120.0


def llm_part() -> Any:
    return parts.replica_part(TRACK)


def runs_llm(ctx: ConsoleContext) -> bool:
    return ctx.stack.topology.runs(llm_part())


def llm_replicas(ctx: ConsoleContext) -> list[str]:
    return ctx.stack.topology.instances(llm_part())


def is_llm_replica(name: str) -> bool:
    return parts.part_for(name) is llm_part()


def check_llm_replica(ctx: ConsoleContext, name: str) -> str:
    names = llm_replicas(ctx)
    if name not in names:
        raise ConsoleError(f"no LLM replica {name!r} in this stack; LLM replicas are: {', '.join(names) or 'none'}"
                           + ("" if names else " (start the stack with `faultline up --track llm`)"), 404)
    return name


def _client(ctx: ConsoleContext, name: str) -> Any:
    return ctx.http.client(name)


def _part_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except PartError as exc:
        status = 503 if exc.status is None else (422 if exc.status in (400, 404, 413, 422) else
                                                 409 if exc.status in (409, 429) else 502)
        raise ConsoleError(exc.message, status) from exc


# --- metrics llm-N ------------------------------------------------------------------------------------------------

def replica_metrics(ctx: ConsoleContext, name: str) -> OpResult:
    """The replica's own vLLM figures, cumulative since it started (its /metrics, through its typed client)."""
    figures = _part_call(_client(ctx, name).vllm_metrics)
    lines = [f"{name} (vLLM metrics, cumulative since it started)"]
    for key in ("ttft", "itl", "e2e", "queue_time"):
        h = figures.get(key) or {}
        lines.append(f"  {key:22} p50 {num(h.get('p50_ms'))} ms  p99 {num(h.get('p99_ms'))} ms  "
                     f"({num(h.get('count'), '{:.0f}')} observations)")
    p = figures.get("prompt_len") or {}
    lines.append(f"  {'prompt_len':22} p50 {num(p.get('p50'), '{:.0f}')} p99 {num(p.get('p99'), '{:.0f}')} tokens  "
                 f"({num(p.get('count'), '{:.0f}')} prompts; the context is the model's max_model_len)")
    for key in ("num_requests_running", "num_requests_waiting", "kv_cache_usage", "kv_blocks_used", "kv_blocks_total",
                "preemptions", "prefix_cache_hit_rate", "spec_acceptance_rate", "prompt_tokens",
                "generation_tokens", "engine_steps"):
        value = figures.get(key)
        lines.append(f"  {key:22} {num(value, '{:.4g}') if isinstance(value, float) else value}")
    shares = figures.get("finish_reason") or {}
    lines.append("  finish_reason          " + (", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items()))
                                               or "none yet"))
    if figures.get("rejected"):
        lines.append("  rejected               " + ", ".join(f"{k} {v:.0f}" for k, v in figures["rejected"].items()))
    return OpResult({"service": name, "source": "vllm", **figures}, "\n".join(lines))


# --- generate -----------------------------------------------------------------------------------------------------

@operation("generate")
def generate(ctx: ConsoleContext, args: Any) -> OpResult:
    if not runs_llm(ctx):
        raise ConsoleError("generate needs the LLM track: this stack runs "
                           f"{', '.join(ctx.stack.topology.tracks)} (`faultline up --track llm`)", 409)
    target = GATEWAY if args.replica is None else check_llm_replica(ctx, args.replica)
    body: dict[str, Any] = {"prompt": args.prompt, "max_tokens": args.max_tokens,
                            "stream_options": {"include_usage": True}}
    if args.temperature is not None:
        body["temperature"] = args.temperature
    http = ctx.http
    times: list[float] = []
    pieces: list[str] = []
    finish, usage, model = None, None, None
    try:
        for at, chunk in stream_completion(http.http, http.service_url(target), body, target, GENERATE_TIMEOUT_S):
            model = chunk.get("model") or model
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if choice.get("text"):
                    pieces.append(choice["text"])
                    times.append(at)
                finish = choice.get("finish_reason") or finish
    except PartError as exc:
        status = 503 if exc.status is None else (429 if exc.status == 429 else
                                                 422 if exc.status in (400, 404, 413, 422) else 502)
        raise ConsoleError(f"generate via {target}: {exc.message}", status) from exc
    text = "".join(pieces)
    tokens = int((usage or {}).get("completion_tokens") or len(times))
    ttft = times[0] if times else None
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    itl = sum(gaps) / len(gaps) if gaps else None
    total = times[-1] if times else None
    rate = (tokens - 1) / (total - ttft) if tokens > 1 and total and ttft is not None and total > ttft else None
    timings = {"ttft_ms": _ms(ttft), "itl_ms": _ms(itl), "itl_max_ms": _ms(max(gaps) if gaps else None),
               "e2e_ms": _ms(total), "tokens_per_s": rate, "output_tokens": tokens, "chunks": len(times)}
    # the stream as it arrived (ms after the request, text), so the browser can replay it at its own pace
    stream = [[_ms(at), piece] for at, piece in zip(times, pieces, strict=True)][:STREAM_KEPT]
    stalls = _stalls(gaps)
    data = {"via": target, "model": model, "prompt": args.prompt, "text": text, "finish_reason": finish,
            "usage": usage, "timings": timings, "stream": stream, "stalls": stalls}
    head = (f"via {target} ({model or '?'}): {tokens} tokens, finish {finish or '?'}; "
            f"TTFT {num(timings['ttft_ms'])} ms, ITL {num(timings['itl_ms'])} ms "
            f"(max {num(timings['itl_max_ms'])}), {num(rate)} tokens/s")
    lines = [head]
    if stalls:
        lines.append("stalls: " + ", ".join(f"{s['wait_ms']:.0f} ms before chunk {s['chunk']}" for s in stalls))
    return OpResult(data, "\n".join(lines) + "\n\n" + args.prompt + text,
                    summary=f"{head} :: {text[:60]!r}")


STREAM_KEPT = 1024  # chunks kept for the replay (max_tokens is far below on this model's context)


def _stalls(gaps: list[float], top: int = 3) -> list[dict[str, float]]:
    """The longest waits between chunks that stand out (over 100 ms and 5x the median gap): a stream that froze."""
    if not gaps:
        return []
    median = sorted(gaps)[len(gaps) // 2]
    limit = max(0.1, 5 * median)
    long = sorted(((g, i + 1) for i, g in enumerate(gaps) if g > limit), reverse=True)[:top]
    return [{"chunk": i, "wait_ms": round(1000 * g, 1)} for g, i in sorted(long, key=lambda x: x[1])]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


# --- the canary sample (the browser's "canary output" panel) --------------------------------------------------------

CANARY_SAMPLE_TOKENS = 32
CANARY_SAMPLE_TIMEOUT_S = 10.0


def canary_prompt() -> str:
    """The first clause of the monitor's canary text, cut mid-sentence so that a model goes on writing (the whole
    verse ends where a model stops)."""
    from lab.monitor.llm import CANARY_TEXT

    return CANARY_TEXT.split(";")[0] + "; and"


def canary_sample(lab: Any, replica: str, max_tokens: int = CANARY_SAMPLE_TOKENS,
                  timeout_s: float = CANARY_SAMPLE_TIMEOUT_S) -> dict[str, Any]:
    """What `replica` generates right now for a fixed prompt (`canary_prompt()`; greedy, `max_tokens`), straight to the
    replica's own port: {"replica", "version", "prompt", "text", "finish_reason", "tokens", "ms", "at"}. Not a
    learner's action (nothing is journaled); its finish is left out of the replica's finish-reason shares."""
    ctx = ConsoleContext(lab, None)
    if not runs_llm(ctx):
        raise ConsoleError("the canary sample needs the LLM track (`faultline up --track llm`)", 409)
    check_llm_replica(ctx, replica)
    prompt = canary_prompt()
    t0 = time.perf_counter()
    try:
        got = _client(ctx, replica).call("POST", "/v1/completions",
                                         {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
                                         timeout=timeout_s)
    except PartError as exc:
        said = _openai_error(exc.body)  # the replica's own words (OpenAI's error shape), not its raw JSON
        if said is None:
            raise ConsoleError(exc.message, 503 if exc.status is None else 502) from exc
        raise ConsoleError(f"{replica} refused the prompt ({exc.status}): {said}", 502) from exc
    at = time.time()
    choice = (got.get("choices") or [{}])[0]
    finish = choice.get("finish_reason")
    monitor = getattr(lab.components.get("monitor"), "monitor", None)
    if finish == "length" and monitor is not None:
        monitor.note_canary_finish(replica, at)
    return {"replica": replica, "version": got.get("model"), "prompt": prompt, "text": choice.get("text") or "",
            "finish_reason": finish, "tokens": (got.get("usage") or {}).get("completion_tokens"),
            "ms": round((time.perf_counter() - t0) * 1000, 1), "at": at}


def _openai_error(body: Any) -> str | None:
    """The message of an OpenAI-shaped error body ({"error": {"message", "code"}}), else None."""
    try:
        parsed = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict) or not error.get("message"):
        return None
    return str(error["message"]) + (f" ({error['code']})" if error.get("code") else "")


# --- eval ---------------------------------------------------------------------------------------------------------

@operation("eval")
def evaluate(ctx: ConsoleContext, args: Any) -> OpResult:
    if not runs_llm(ctx):
        raise ConsoleError("eval needs the LLM track: this stack runs "
                           f"{', '.join(ctx.stack.topology.tracks)} (`faultline up --track llm`)", 409)
    replicas: dict[str, Any] = {}
    for name in llm_replicas(ctx):
        client = _client(ctx, name)
        try:
            served = (client.models().get("data") or [{}])[0]
            figure = client.perplexity(EVAL_TEXT)
            replicas[name] = {"version": served.get("id"), "variant": served.get("variant"), **figure}
        except PartError as exc:
            replicas[name] = {"error": exc.message}
    versions: dict[str, Any] = {}
    for name, r in replicas.items():
        if "perplexity" in r:
            v = versions.setdefault(r["version"], {"replicas": [], "perplexity": r["perplexity"]})
            v["replicas"].append(name)
            v["perplexity"] = min(v["perplexity"], r["perplexity"])
    registry = _llm_versions(ctx)
    for meta in registry:
        entry = versions.setdefault(meta["version"], {"replicas": [], "perplexity": None})
        entry["registered_val_perplexity"] = (meta.get("metrics") or {}).get("val_perplexity")
        entry["stage"] = meta.get("stage")
        entry["variant"] = meta.get("variant")
    rows = [["REPLICA", "VERSION", "PERPLEXITY", "TOKENS"]]
    rows += [[n, str(r.get("version") or "-"), num(r.get("perplexity"), "{:.2f}"), str(r.get("tokens") or "-")]
             if "error" not in r else [n, "-", "unreachable", r["error"][:80]] for n, r in replicas.items()]
    vrows = [["VERSION", "STAGE", "SERVED BY", "CANARY PERPLEXITY", "REGISTERED VAL PERPLEXITY"]]
    vrows += [[v, str(e.get("stage") or "-"), ", ".join(e["replicas"]) or "-", num(e.get("perplexity"), "{:.2f}"),
               num(e.get("registered_val_perplexity"), "{:.2f}")] for v, e in versions.items()]
    text = ("canary perplexity of a fixed held-out text (lower is better; a broken model is far higher)\n"
            + table(rows) + "\n\n" + table(vrows)
            + "\n(a version no replica serves shows its registered held-out figure only: deploy it to measure it)")
    return OpResult({"text_chars": len(EVAL_TEXT), "replicas": replicas, "versions": versions}, text)


def _llm_versions(ctx: ConsoleContext) -> list[dict[str, Any]]:
    try:
        return list(ctx.http.registry("GET", "/v1/llm/models"))
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc


# --- deploys / deploy / rollback / promote for LLM versions --------------------------------------------------------

def llm_deploys(ctx: ConsoleContext) -> OpResult:
    listing = [{k: m.get(k) for k in ("version", "stage", "created_at", "variant", "metrics", "sha256", "draft")}
               for m in _llm_versions(ctx)]
    serving: dict[str, Any] = {}
    for name in llm_replicas(ctx):
        try:
            served = (_client(ctx, name).models().get("data") or [{}])[0]
            serving[name] = {"version": served.get("id"), "sha256": served.get("sha256"), "draft": served.get("draft"),
                             "tokenizer": served.get("tokenizer"), "generation_config": served.get("generation_config")}
        except PartError as exc:
            serving[name] = {"error": exc.message}
    gateway = _gateway_config(ctx)
    drained = [d for d in gateway.get("drained") or [] if d in serving]
    rows = [["VERSION", "STAGE", "VARIANT", "VAL PERPLEXITY", "DRAFT", "CREATED"]]
    rows += [[m["version"], str(m.get("stage") or "-"), str(m.get("variant") or "-"),
              num((m.get("metrics") or {}).get("val_perplexity"), "{:.2f}"), str(m.get("draft") or "-"),
              str(m.get("created_at") or "-")[:19]] for m in listing]
    text = [table(rows), "", "drained: " + (", ".join(drained) or "none")]
    text += [f"{n}: " + (f"serves {s['version']} (tokenizer {s.get('tokenizer')}, generation config "
                         f"{s.get('generation_config')})" if "error" not in s else f"unreachable: {s['error']}")
             for n, s in serving.items()]
    return OpResult({"track": TRACK, "versions": listing, "replicas": serving, "drained": drained}, "\n".join(text))


def _gateway_config(ctx: ConsoleContext) -> dict[str, Any]:
    try:
        return ctx.http.get_config(GATEWAY)
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc


# The replica's flags naming where each part of what it serves comes from (services/llm/__main__.py); the
# tokenizer and generation config default to --version's own.
PART_FLAGS = {"weights": "--version", "tokenizer": "--tokenizer", "generation_config": "--generation"}


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def _without(argv: list[str], flag: str) -> list[str]:
    if flag not in argv:
        return list(argv)
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:]


def served_parts(argv: list[str]) -> dict[str, str]:
    """{part: version} a replica started with `argv` serves."""
    weights = _flag(argv, "--version") or "v1"
    return {"weights": weights, "tokenizer": _flag(argv, "--tokenizer") or weights,
            "generation_config": _flag(argv, "--generation") or weights}


def argv_with_parts(argv: list[str], wanted: dict[str, str]) -> list[str]:
    """`argv` serving `wanted` ({part: version}); a part from the weights' own version needs no flag."""
    out = list(argv)
    for flag in PART_FLAGS.values():
        out = _without(out, flag)
    out += ["--version", wanted["weights"]]
    for part in ("tokenizer", "generation_config"):
        if wanted[part] != wanted["weights"]:
            out += [PART_FLAGS[part], wanted[part]]
    return out


def llm_rollout(ctx: ConsoleContext, version: str, canary: float | None, verb: str,
                part: str | None = None) -> OpResult:
    """Every LLM replica restarted on `version` (or on one `part` of it, the others as each replica serves them),
    one at a time; refused before anything changes when the version is unknown or corrupt, or when a canary split
    is asked (the gateway's LLM routes do not split by version)."""
    if canary is not None:
        raise ConsoleError("a canary split is not available on the LLM track (the gateway's LLM routes pick the "
                           "least busy replica, not a version): deploy without --canary", 422)
    known = {m["version"]: m for m in _llm_versions(ctx)}
    if version not in known:
        raise ConsoleError(f"no LLM version {version!r} in the registry; LLM versions are: "
                           f"{', '.join(known) or 'none'}", 404)
    try:
        check = ctx.http.registry("GET", f"/v1/llm/models/{version}/verify")
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc
    if not check.get("ok", False):
        raise ConsoleError(f"LLM {version} fails its sha256 check, nothing was changed: {check.get('detail')}", 409)
    t0 = time.monotonic()
    done: dict[str, Any] = {}
    whole = part in (None, "all")
    for name in llm_replicas(ctx):
        http = ctx.http
        argv = http.spec_argv(name)
        wanted = dict.fromkeys(PART_FLAGS, version) if whole else {**served_parts(argv), part: version}
        http.set_argv(name, argv_with_parts(argv, wanted))
        ctx.stack.restart(name)
        missing = http.wait_ready([name], ROLLOUT_READY_S)
        st = http.status(name)
        done[name] = {"ready": st["ready"], "state": st["state"], "serves": wanted}
        if missing:
            raise ConsoleError(f"{name} did not become ready on LLM {version} within {ROLLOUT_READY_S:.0f}s "
                               f"(state {st['state']}: {st.get('not_ready_reason') or '-'}); the replicas after "
                               "it were left on their version", 409)
    took = time.monotonic() - t0
    what = f"LLM {version}" if whole else f"the {part} of LLM {version}"
    text = f"{what} {verb}: {', '.join(done)} restarted on it one at a time in {took:.1f}s"
    return OpResult({"track": TRACK, "version": version, "part": part or "all", "replicas": done,
                     "seconds": round(took, 2)}, text, resolved={"version": version, "track": TRACK})
