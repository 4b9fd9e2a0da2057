"""Scenarios on the LLM track (`stack.track: llm`): the schema accepts them, and a scenario that mixes the tracks is
refused with `file:line: field: message` — an LLM profile on a fraud scenario, a fraud-only probe kind on an LLM one,
`model-2` where `llm-2` is meant, a diagnosis on another track, a config key the LLM replica does not have.

Fast: no stack. Each case is the valid LLM scenario below with one line changed; the expected line is found in
the changed text, so the check is on the reported line as much as on the message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.scenario import load_scenario, taxonomy, validate_paths
from lab.scenario.cli import cmd_list

ROOT = Path(__file__).resolve().parents[2]

LLM_SCENARIO = """\
id: llm-small
title: Streams that stall
summary: One LLM replica has too small a KV cache.
difficulty: intro
skills: [capacity]
estimated_minutes: 5
briefing: Chat answers freeze now and then.
variables:
  replica:
    choice: [llm-1, llm-2]
stack:
  track: llm
  replicas: 2
  services:
    llm-1: {step_delay_ms: 25}
  traffic: {rps: 8, concurrency: 32, retry_policy: honour-retry-after, retries: 2}
faults:
  - id: push
    kind: config
    action: push
    target: "{{ replica }}"
    params: {values: {num_kv_blocks: 24}}
    when: {at_s: 10}
    until: fixed
steady_state:
  - id: preemptions
    kind: preemption_rate
    tolerance: {max: 0.1}
    window_s: 30
  - id: kv
    kind: kv_cache_usage
    target: "{{ replica }}"
    tolerance: {max: 0.8}
diagnosis:
  answer:
    category: [config]
    component: ["{{ replica }}"]
    cause: [kv-cache-budget]
  evidence:
    - {op: metrics, args: {service: "{{ replica }}"}}
fix:
  accepted:
    - description: no preemptions
      probes: [preemptions, kv]
      hold_s: 30
  collateral:
    - {op: restart, args: {service: gateway}, penalty: 5, reason: The gateway was healthy.}
hints:
  - text: Compare the replicas' KV-cache usage.
    cost: 5
  - text: "Set num_kv_blocks back to 512 on {{ replica }}."
    cost: 10
    solution: true
scoring:
  weights: {diagnosis: 40, fix: 30, time: 10, hints: 20}
  par_detect_s: 60
  par_mitigate_s: 180
debrief:
  what_happened: "{{ replica }} had a small KV cache."
  ideal_path: ["metrics {{ replica }}", "config set {{ replica }} num_kv_blocks 512"]
  lesson: The KV cache must fit the concurrency.
solution:
  - {op: metrics, args: {service: "{{ replica }}"}}
  - {op: config_set, args: {service: "{{ replica }}", key: num_kv_blocks, value: 512}}
wrong_fix:
  - {op: restart, args: {service: "{{ replica }}"}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llm-small.yaml"
    path.write_text(text)
    return path


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_an_llm_scenario_is_accepted_and_runs_on_the_llm_track(tmp_path: Path) -> None:
    path = _write(tmp_path, LLM_SCENARIO)
    assert validate_paths([path]) == []
    s = load_scenario(path)
    assert s.track == "llm" and s.stack.track == "llm" and s.diagnosis.track == "llm"
    assert s.stack.traffic.profile == "chat"  # the LLM track's default profile when none is named
    assert (s.stack.traffic.concurrency, s.stack.traffic.retry_policy, s.stack.traffic.retries) == (
        32, "honour-retry-after", 2)
    opts = taxonomy.options(s)
    assert {"llm-1", "llm-2", "gateway", "registry"} <= set(opts["component"])
    assert not {"model-1", "feature-store"} & set(opts["component"])
    assert "kv-cache-budget" in opts["cause"] and "concept-drift" not in opts["cause"]


def test_a_fraud_scenario_is_unchanged_by_the_track_field() -> None:
    s = load_scenario(ROOT / "tests" / "scenario" / "valid" / "minimal-valid.yaml")
    assert s.track == "fraud" and s.diagnosis.track == "fraud" and s.stack.traffic.profile == "baseline"
    assert s.stack.traffic.concurrency is None and s.stack.traffic.retry_policy is None


CASES = {
    # (old line, new line, needle of the reported line (None: the new line), expected "field: message" start)
    "llm profile on a fraud scenario": (
        "  track: llm", "  track: fraud\n  # fraud", "traffic:",
        "stack.traffic.concurrency: concurrency is a setting of the LLM track's clients"),
    "fraud profile on an llm scenario": (
        "  traffic: {rps: 8, concurrency: 32, retry_policy: honour-retry-after, retries: 2}",
        "  traffic: {profile: surge, rps: 8}", None,
        "stack.traffic.profile: 'surge' is not a llm-track traffic profile; expected one of: chat"),
    "fraud-only probe kind": (
        "    kind: preemption_rate", "    kind: decline_rate", None,
        "steady_state[0].kind: 'decline_rate' measures the fraud track; on the llm track use one of: ttft_p99_ms"),
    "model-2 for llm-2": (
        "    target: \"{{ replica }}\"\n    params", "    target: model-2\n    params", "target: model-2",
        "faults[0].target: 'model-2' is not part of the llm track's stack; its services are: gateway, "
        "registry, llm-1 .. llm-2"),
    "model-2 where an LLM probe measures": (
        "    choice: [llm-1, llm-2]", "    choice: [llm-1, model-2]", None,
        "variables.replica.choice[1]: unknown target 'model-2'; expected an LLM replica (llm-N)"),
    "a fraud-only service": (
        "    llm-1: {step_delay_ms: 25}", "    feature-store: {latency_ms: 5}", None,
        "stack.services.feature-store: 'feature-store' is not part of the llm track's stack"),
    "llm-3 on two replicas": (
        "    target: \"{{ replica }}\"\n    params", "    target: llm-3\n    params", "target: llm-3",
        "faults[0].target: 'llm-3' does not exist: the stack has 2 replica(s) (llm-1 .. llm-2)"),
    "diagnosis on another track": (
        "  answer:", "  track: fraud\n  answer:", "track: fraud",
        "diagnosis.track: the diagnosis is on the fraud track but the stack runs the llm track"),
    "unknown llm config key": (
        "    llm-1: {step_delay_ms: 25}", "    llm-1: {kv_blocks: 25}", None,
        "stack.services.llm-1.kv_blocks: llm-1 has no config key 'kv_blocks'; its keys are: num_kv_blocks"),
    "bad llm config value": (
        "    llm-1: {step_delay_ms: 25}", "    llm-1: {num_kv_blocks: 0}", None,
        "stack.services.llm-1.num_kv_blocks: llm-1 refuses num_kv_blocks=0"),
    "a canary on the llm track": (
        "  replicas: 2\n  services", "  replicas: 2\n  versions: {production: v1, canary: v2, canary_weight: 0.1}\n"
        "  services", "canary:",
        "stack.versions.canary: the LLM track has no canary split"),
    "a fraud operation on the llm track": (
        "    - {op: metrics, args: {service: \"{{ replica }}\"}}\nfix:", "    - {op: drift}\nfix:", "op: drift",
        "diagnosis.evidence[0].op: 'drift' is an operation of the fraud track"),
    "a fraud traffic profile as an llm fault": (
        "    until: fixed\nsteady_state:",
        "    until: fixed\n  - {id: drift, kind: data, action: profile, params: {profile: covariate-shift},\n"
        "     when: {at_s: 20}, until: fixed}\nsteady_state:", "id: drift",
        "faults[1].params.profile: 'covariate-shift' is not a llm-track traffic profile; expected one of: chat"),
    "strength on an llm traffic profile": (
        "    until: fixed\nsteady_state:",
        "    until: fixed\n  - {id: drift, kind: data, action: profile, params: {profile: abandon, strength: 0.5},\n"
        "     when: {at_s: 20}, until: fixed}\nsteady_state:", "id: drift",
        "faults[1].params.strength: strength weakens the fraud track's profiles only"),
    "too many llm replicas": (
        "  replicas: 2", "  replicas: 12", None, "stack.replicas: the llm track runs at most 8 replicas, got 12"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_scenario_mixing_the_tracks_is_refused_at_its_line(tmp_path: Path, case: str) -> None:
    _refused_at_its_line(tmp_path, *CASES[case])


def _refused_at_its_line(tmp_path: Path, old: str, new: str, needle: str | None, expected: str) -> None:
    """LLM_SCENARIO with `old` replaced by `new` is refused with `expected` at the line of `needle` (else new's)."""
    assert LLM_SCENARIO.count(old) == 1, old
    text = LLM_SCENARIO.replace(old, new)
    path = _write(tmp_path, text)
    line = _line_of(text, needle or new.splitlines()[0].strip())
    problems = validate_paths([path])
    wanted = f"{path}:{line}: {expected}"
    assert any(p.startswith(wanted) for p in problems), "\n".join([f"wanted: {wanted}", *problems])


def test_an_llm_probe_or_operation_on_a_fraud_scenario_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "tests" / "scenario" / "valid" / "minimal-valid.yaml").read_text()
    text = text.replace("    kind: replicas_ready\n    tolerance: {min: 1}",
                        "    kind: kv_cache_usage\n    tolerance: {max: 0.8}")
    text = text.replace("    - {op: status}\nfix:", "    - {op: eval}\nfix:")
    path = tmp_path / "minimal-valid.yaml"
    path.write_text(text)
    problems = validate_paths([path])
    kind_line, op_line = _line_of(text, "kind: kv_cache_usage"), _line_of(text, "op: eval")
    assert f"{path}:{kind_line}: steady_state[1].kind: 'kv_cache_usage' measures the LLM track; this scenario " \
           "runs the fraud track" in problems, problems
    assert f"{path}:{op_line}: diagnosis.evidence[0].op: 'eval' is an operation of the LLM track" in problems, problems


def test_an_llm_traffic_profile_change_is_a_data_profile_fault(tmp_path: Path) -> None:
    text = LLM_SCENARIO.replace("    until: fixed\nsteady_state:", "    until: fixed\n  - {id: history, kind: data, "
                                "action: profile, params: {profile: growing-history}, when: {at_s: 20}, "
                                "until: fixed}\nsteady_state:")
    assert validate_paths([_write(tmp_path, text)]) == []


def test_the_catalog_llm_scenario_and_list_json_track(capsys: pytest.CaptureFixture[str]) -> None:
    s = load_scenario(ROOT / "scenarios" / "frozen-streams.yaml")
    assert s.track == "llm" and s.stack.replicas == 2
    assert cmd_list(ROOT / "scenarios", as_json=True) == 0
    listed = {e["id"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["frozen-streams"]["track"] == "llm"
    assert listed["slow-replica"]["track"] == "fraud"
    assert {e["track"] for e in listed.values()} == {"fraud", "llm"}


def test_the_llm_causes_are_neutral_and_of_one_length_band() -> None:
    labels = taxonomy.causes("llm")
    lengths = [len(v) for v in labels.values()]
    assert max(lengths) - min(lengths) <= 12, labels
    assert all(v[0].isupper() and not v.endswith(".") for v in labels.values())
    # issue 17's eleven incidents each have a cause, plus distractors
    for cause in ("kv-cache-budget", "prefill-stalls", "stream-buffering", "context-overflow", "tokenizer-mismatch",
                  "sampling-defaults", "bad-quantisation", "retry-storm", "draft-mismatch", "prefix-cache-miss",
                  "abandoned-streams"):
        assert cause in labels
    assert len(labels) >= 15
    # no label names a fix
    for word in ("restore", "rollback", "roll back", "restart", "raise", "lower", "drain", "scale"):
        assert not any(word in v.lower() for v in labels.values()), word


def test_the_self_test_takes_a_catalog_id_as_faultline_run_does() -> None:
    from lab.selftest import scenario_files

    assert scenario_files(["frozen-streams"]) == [ROOT / "scenarios" / "frozen-streams.yaml"]
    assert scenario_files(["no-such-scenario"]) == [Path("no-such-scenario")]  # reported as no such file


# Fault kinds that act on an LLM replica (docs/faults.md), an LLM version deploy, a scale of llm replicas and the
# replicas_ready probe, all on an LLM scenario.
LLM_FAULTS = """\
  - {id: kill, kind: process, action: kill, target: llm-1, when: {at_s: 10}, until: fixed}
  - {id: freeze, kind: process, action: freeze, target: llm-2, when: {at_s: 10}, until: {duration_s: 5}}
  - id: slow-hop
    kind: network
    action: toxic
    target: llm-1
    params: {type: latency, latency: 300}
    when: {at_s: 10}
    until: fixed
  - {id: tight, kind: memory, action: limit, target: llm-2, params: {limit_mb: 64}, when: {at_s: 10}, until: fixed}
  - {id: hog, kind: cpu, action: hog, target: llm-1, params: {cores: 1, duty: 0.5}, when: {at_s: 10}, until: fixed}
"""


def test_llm_fault_kinds_versions_scale_and_replicas_ready_on_an_llm_scenario(tmp_path: Path) -> None:
    text = LLM_SCENARIO.replace("faults:\n", "faults:\n" + LLM_FAULTS)
    ready = "  - {id: ready, kind: replicas_ready, tolerance: {min: 2}}\n"
    text = text.replace("steady_state:\n", "steady_state:\n" + ready)
    text = text.replace(
        "  - {op: config_set, args: {service: \"{{ replica }}\", key: num_kv_blocks, value: 512}}\n",
        "  - {op: config_set, args: {service: \"{{ replica }}\", key: num_kv_blocks, value: 512}}\n"
        "  - {op: scale, args: {replicas: 3, track: llm}}\n"
        "  - {op: deploy, args: {version: v1-int8, part: weights, track: llm}}\n"
        "  - {op: rollback, args: {version: v1}}\n")
    path = _write(tmp_path, text)
    assert validate_paths([path]) == []
    s = load_scenario(path)
    assert [f"{f.kind}.{f.action}" for f in s.faults][:5] == ["process.kill", "process.freeze", "network.toxic",
                                                              "memory.limit", "cpu.hog"]
    ops = [(op.op, op.args.model_dump(exclude_none=True)) for op in s.solution]
    assert ("scale", {"replicas": 3, "track": "llm"}) in ops
    assert ("deploy", {"version": "v1-int8", "part": "weights", "track": "llm"}) in ops


OTHER_TRACK = {
    "a fraud version on the llm track": (
        "  - {op: restart, args: {service: \"{{ replica }}\"}}",
        "  - {op: deploy, args: {version: flipped_labels}}", None,
        "wrong_fix[0].args.version: 'flipped_labels' is not a version of the llm track; expected one of: v1"),
    "the fraud track named on an llm scenario": (
        "  - {op: restart, args: {service: \"{{ replica }}\"}}",
        "  - {op: scale, args: {replicas: 3, track: fraud}}", None,
        "wrong_fix[0].args.track: 'fraud': this scenario runs the llm track"),
}


@pytest.mark.parametrize("case", list(OTHER_TRACK))
def test_an_operation_of_the_other_track_is_refused_at_its_line(tmp_path: Path, case: str) -> None:
    _refused_at_its_line(tmp_path, *OTHER_TRACK[case])


def test_an_llm_version_on_a_fraud_scenario_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "tests" / "scenario" / "valid" / "minimal-valid.yaml").read_text()
    assert "    - {op: status}\nfix:" in text
    text = text.replace("    - {op: status}\nfix:", "    - {op: deploys, args: {track: llm}}\nfix:")
    text = text.replace("\nsolution:\n", "\nsolution:\n  - {op: deploy, args: {version: v1-int4}}\n", 1)
    path = tmp_path / "minimal-valid.yaml"
    path.write_text(text)
    problems = validate_paths([path])
    assert any("diagnosis.evidence[0].args.track: 'llm': this scenario runs the fraud track" in p
               for p in problems), problems
    assert any("solution[0].args.version: 'v1-int4' is not a version of the fraud track" in p
               for p in problems), problems
