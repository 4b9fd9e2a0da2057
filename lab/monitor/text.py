"""Plain-text renderings of the monitor's reports for `faultline metrics`, `faultline drift`, `faultline slo`.

The CLI fetches JSON from the lab (/api/metrics, /api/drift, /api/slo) and prints one of these unless --json.
"""

from __future__ import annotations

import time
from typing import Any

from lab.parts.gateway import NAME as GATEWAY


def _num(value: Any, fmt: str = "{:.1f}", none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def _pct(value: Any) -> str:
    return _num(None if value is None else 100.0 * value, "{:.1f}%")


def _mb(value: Any) -> str:
    return _num(None if value is None else value / 1e6, "{:.0f} MB")


def _when(ts: Any) -> str:
    if ts is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(float(ts)))


def format_metrics(m: dict[str, Any]) -> str:
    head = (f"{'service':16} {'up':>3} {'rps':>7} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'queue ms':>9} {'compute ms':>10} {'rss':>8} {'cpu':>6} {'restarts':>8}")
    lines = [f"last {_num(m.get('window_s'), '{:g}')} s, at {_when(m.get('at'))}", head]
    for name, s in (m.get("services") or {}).items():
        lines.append(
            f"{name:16} {_num(s.get('up')):>3} {_num(s.get('rps')):>7} {_pct(s.get('error_rate')):>7} "
            f"{_num(s.get('p50_ms')):>8} {_num(s.get('p95_ms')):>8} {_num(s.get('p99_ms')):>8} "
            f"{_num(s.get('queue_ms'), '{:.2f}'):>9} {_num(s.get('compute_ms'), '{:.2f}'):>10} "
            f"{_mb(s.get('rss_bytes')):>8} {_num(s.get('cpu_percent'), '{:.0f}%'):>6} "
            f"{_num(s.get('restarts'), '{:d}'):>8}"
            + (f"   scrape failed: {s['scrape_error']}" if s.get("scrape_error") else "")
        )
    llm = m.get("llm")
    if llm:
        lines.append(f"{'LLM':16} {'ttft p50':>9} {'ttft p99':>9} {'itl p99':>8} {'tok/s':>7} {'kv':>6} {'wait':>5} "
                     f"{'preempt/s':>9} {'prefix hit':>10} {'perplexity':>10}  finish")
        for name in llm.get("replicas") or []:
            s = (m.get("services") or {}).get(name) or {}
            finish = ", ".join(f"{r} {_pct(v)}" for r, v in (s.get("finish_reason") or {}).items() if v)
            lines.append(f"{name:16} {_num(s.get('ttft_p50_ms')):>9} {_num(s.get('ttft_p99_ms')):>9} "
                         f"{_num(s.get('itl_p99_ms')):>8} {_num(s.get('output_tokens_per_s')):>7} "
                         f"{_pct(s.get('kv_cache_usage')):>6} {_num(s.get('num_requests_waiting'), '{:.0f}'):>5} "
                         f"{_num(s.get('preemptions_per_s'), '{:.2f}'):>9} {_pct(s.get('prefix_cache_hit_rate')):>10} "
                         f"{_num(s.get('canary_perplexity'), '{:.2f}'):>10}  {finish or '-'}")
        g = (m.get("services") or {}).get(GATEWAY) or {}
        lines.append(f"gateway LLM: {_num(g.get('llm_rps'))} rps, TTFT p50/p99 {_num(g.get('llm_ttft_p50_ms'))}/"
                     f"{_num(g.get('llm_ttft_p99_ms'))} ms, 429s {_pct(g.get('rate_limited_rate'))}; clients: TTFT p99 "
                     f"{_num(g.get('client_ttft_p99_ms'))} ms, ITL p99 {_num(g.get('client_itl_p99_ms'))} ms; goodput "
                     f"{_pct(g.get('goodput_ratio'))}")
        for version, v in (llm.get("versions") or {}).items():
            lines.append(f"LLM version {version}: {', '.join(v.get('replicas') or [])}, canary perplexity "
                         f"{_num(v.get('canary_perplexity'), '{:.2f}')}")
    for version, v in (m.get("versions") or {}).items():
        lines.append(f"version {version}: {_num(v.get('rps'))} rps, declines {_pct(v.get('decline_rate'))}, "
                     f"mean score {_num(v.get('score_mean'), '{:.3f}')}")
    q = m.get("quality") or {}
    lines.append(
        f"quality (labels in the last {_num(q.get('window_s'), '{:g}')} s: {_num(m.get('labels'), '{:.0f}')}): "
        f"accuracy {_num(m.get('accuracy'), '{:.3f}')}, precision {_num(m.get('precision'), '{:.3f}')}, "
        f"recall {_num(m.get('recall'), '{:.3f}')}"
    )
    cum = q.get("cumulative") or {}
    if cum:
        lines.append(f"cumulative ({_num(cum.get('labels'), '{:.0f}')} labels): accuracy "
                     f"{_num(cum.get('accuracy'), '{:.3f}')}, precision {_num(cum.get('precision'), '{:.3f}')}, "
                     f"recall {_num(cum.get('recall'), '{:.3f}')}")
    return "\n".join(lines)


def format_drift(d: dict[str, Any]) -> str:
    if not d.get("features"):
        return "no drift report yet (the reference or the live window is not available)"
    lines = [f"live window {d.get('window')} rows vs reference {d.get('reference_version')} "
             f"({d.get('reference_rows')} rows), at {_when(d.get('at'))}"]
    if not d.get("enough_data"):
        lines.append(f"not enough live rows to judge (need {d.get('thresholds', {}).get('min_rows')})")
    lines.append(f"{'feature':18} {'psi':>7} {'test':>5} {'p-value':>9} {'js':>6} {'nulls':>7}  status")
    for f in d["features"]:
        lines.append(
            f"{f['name']:18} {_num(f.get('psi'), '{:.3f}'):>7} {f.get('test', ''):>5} "
            f"{_num(f.get('p_value'), '{:.3g}'):>9} {_num(f.get('js'), '{:.3f}'):>6} "
            f"{_pct(f.get('null_rate')):>7}  {f.get('status')}"
            + (f" ({'; '.join(f['reasons'])})" if f.get("reasons") else "")
        )
    score = d.get("score")
    if score:
        lines.append(f"{'(model score)':18} {_num(score.get('psi'), '{:.3f}'):>7} {'ks':>5} "
                     f"{_num(score.get('p_value'), '{:.3g}'):>9} {_num(score.get('js'), '{:.3f}'):>6}")
    lines.append("drifted: " + (", ".join(d.get("drifted") or []) or "nothing"))
    return "\n".join(lines)


def format_slo(s: dict[str, Any]) -> str:
    lines = [f"{'slo':22} {'state':9} {'value':>10} {'threshold':>10}  since     what"]
    for slo in s.get("slos") or []:
        lines.append(f"{slo['name']:22} {slo['state']:9} {_num(slo.get('value'), '{:.4g}'):>10} "
                     f"{_num(slo.get('threshold'), '{:.4g}'):>10}  {_when(slo.get('since')):8}  "
                     f"{slo.get('description', '')}")
    events = s.get("events") or []
    if events:
        lines.append("events:")
        for e in events[-20:]:
            lines.append(f"  {_when(e.get('at'))} {e['slo']} {e['state']} since {_when(e.get('since'))} "
                         f"(value {_num(e.get('value'), '{:.4g}')}, threshold {_num(e.get('threshold'), '{:.4g}')})")
    return "\n".join(lines)
