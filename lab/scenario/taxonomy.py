"""The diagnosis taxonomy: the same category, component and cause options in every scenario of a track.

A scenario states only its correct answers (`diagnosis.answer`) and, optionally, a few cause distractors of its
own; the options a learner picks from are built here, so no option is scenario-made and none gives the answer
away. Categories are the fault kinds (from the fault registry) plus `none` and `transient`, so a control scenario
can be expressed; components are the parts of the stack (from lab/parts, replicas expanded to the scenario's
count) plus the host; causes are one shared list per track. Labels are written to the same length and tone:
tests/scenario/test_taxonomy.py holds them to it. docs/taxonomy.md is the page for learners and authors.
"""

from __future__ import annotations

import random
from typing import Any

from lab import parts

QUESTION_KINDS: tuple[str, ...] = ("category", "component", "cause")
PROMPTS: dict[str, str] = {
    "category": "What kind of fault is this?",
    "component": "Where in the stack is it?",
    "cause": "What is the cause?",
}
DEFAULT_TRACK = "fraud"

# Labels for the fault kinds the registry knows today; a kind added later gets a generic label (see categories()).
_KIND_LABELS: dict[str, str] = {
    "network": "Network: a path between two services",
    "process": "Process: a service is down or restarting",
    "memory": "Memory: a process runs out of memory",
    "cpu": "CPU: processes compete for compute",
    "data": "Data: the inputs to the model changed",
    "deploy": "Deploy: a model version that is serving",
    "config": "Config: a setting that changed behaviour",
    "dependency": "Dependency: a service the stack relies on",
}
_CONTROLS: dict[str, str] = {
    "none": "None: nothing is wrong with the stack",
    "transient": "Transient: it healed by itself in time",
}

# Not a part: a process sharing the machine, outside the stack (a noisy neighbour).
HOST = "host"
_HOST_LABEL = "the host, outside the stack"

# The fraud track's causes: every catalog scenario's cause and plausible distractors, one neutral line each.
CAUSES: dict[str, dict[str, str]] = {
    "fraud": {
        "link-latency": "Added latency on one network link",
        "network-partition": "A network link drops its traffic",
        "crash-loop": "A service crashes each time it starts",
        "frozen-process": "A service froze and stops answering",
        "slow-dependency": "A dependency answers slowly",
        "bad-model-version": "A model version makes wrong calls",
        "corrupt-artifact": "A model artifact fails its checks",
        "slow-model-version": "A model version computes slowly",
        "missing-preprocessing": "A model build skips a preprocess step",
        "flipped-labels": "A model was trained on flipped labels",
        "concept-drift": "Fraud patterns changed since training",
        "covariate-drift": "Input distributions moved slowly",
        "unit-change": "An input field changed its unit",
        "missing-features": "Features arrive empty or defaulted",
        "threshold-change": "The decision threshold was moved",
        "early-readiness": "Replicas report ready too early",
        "timeout-too-short": "A timeout is shorter than the work",
        "retry-budget": "Retries multiply the load on replicas",
        "memory-leak": "Memory grows with every request",
        "memory-limit": "A memory limit is below what it needs",
        "batch-too-large": "A batch setting needs too much memory",
        "cpu-contention": "Another process takes the CPU",
        "traffic-surge": "Traffic rose beyond the capacity",
        "gc-pauses": "Runtime pauses stall the requests",
        "registry-down": "The model registry cannot be reached",
    },
    # The LLM track's causes: every incident of issue 17's catalog and plausible distractors (docs/taxonomy.md).
    "llm": {
        "kv-cache-budget": "The KV cache is too small for the load",
        "prefill-stalls": "Long prompts stall the decoding steps",
        "stream-buffering": "A proxy holds back streamed tokens",
        "context-overflow": "Prompts outgrow the model's context",
        "tokenizer-mismatch": "Weights and tokenizer do not match",
        "sampling-defaults": "Default sampling settings changed",
        "bad-quantisation": "A quantised model lost its accuracy",
        "retry-storm": "Client retries multiply the requests",
        "draft-mismatch": "The draft model does not fit the target",
        "prefix-cache-miss": "Prompts no longer share a prefix",
        "abandoned-streams": "Abandoned requests keep generating",
        "rate-limit-low": "The rate limit is set too low",
        "traffic-surge": "Traffic rose beyond the capacity",
        "link-latency": "Added latency on one network link",
        "crash-loop": "A service crashes each time it starts",
        "memory-limit": "A memory limit is below what it needs",
        "cpu-contention": "Another process takes the CPU",
        "bad-model-version": "A model version generates poorly",
        "timeout-too-short": "A timeout is shorter than the work",
    },
}


def categories() -> dict[str, str]:
    """Every category id -> label: the fault kinds (registry order) then the controls."""
    from lab.scenario.faults import FAULT_KINDS

    out = {k: _KIND_LABELS.get(k, f"{k.capitalize()}: a {k} fault") for k in FAULT_KINDS}
    out.update(_CONTROLS)
    return out


def components(replicas: int, track: str = DEFAULT_TRACK) -> dict[str, str]:
    """Every part of `track`'s stack with `replicas` replicas -> label, plus the host (another track's parts are
    not running in the scenario's stack, so they are no option)."""
    out: dict[str, str] = {}
    for p in parts.parts():
        if track not in p.tracks:
            continue
        if p.replicated:
            for n in range(1, replicas + 1):
                name = p.pattern.replace("{n}", str(n))
                out[name] = name
        else:
            out[p.name] = p.name
    out[HOST] = _HOST_LABEL
    return out


def causes(track: str = DEFAULT_TRACK) -> dict[str, str]:
    return dict(CAUSES[track])


def options(scenario: Any) -> dict[str, dict[str, str]]:
    """Question kind -> {option id: label} for a scenario (its track, its replicas, its distractors)."""
    d = scenario.diagnosis
    cause = causes(d.track)
    for extra in d.distractors:
        cause.setdefault(extra.id, extra.label)
    return {"category": categories(), "component": components(scenario.stack.replicas, d.track), "cause": cause}


def questions(scenario: Any, seed: int | None) -> list[dict[str, Any]]:
    """The diagnosis questions as the learner sees them: options shuffled per seed (never scenario-made order)."""
    out = []
    for kind, opts in options(scenario).items():
        ids = list(opts)
        random.Random(f"{seed}:{scenario.id}:{kind}").shuffle(ids)
        out.append({"id": kind, "kind": kind, "prompt": PROMPTS[kind],
                    "options": [{"id": i, "label": opts[i]} for i in ids]})
    return out


def answers(scenario: Any) -> dict[str, list[str]]:
    """Question id -> the accepted option ids (several for a compound incident)."""
    a = scenario.diagnosis.answer
    return {"category": list(a.category), "component": list(a.component), "cause": list(a.cause)}
