"""The model server's live config (GET/PATCH /admin/config); unknown keys or bad values are refused with 422."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # dynamic batching: a batch closes at max_batch_size rows or max_wait_ms after its first request arrived;
    # each loaded version also reserves a workspace for a full batch (runtime.reserve_workspace), so a batch size
    # far beyond the traffic costs real memory (the OOM crash-loop scenario)
    max_batch_size: int = Field(32, ge=1, le=1_000_000)
    max_wait_ms: float = Field(2.0, ge=0, le=10_000)
    # rows waiting in the queue; beyond it requests are refused at once with 503 + Retry-After
    max_queue: int = Field(512, ge=1, le=1_000_000)
    max_rows_per_request: int = Field(1024, ge=1, le=100_000)
    # prediction cache: 0 off, -1 unbounded (the memory-leak scenario), N = LRU of N rows
    cache_size: int = Field(0, ge=-1, le=100_000_000)
    # what a cache entry holds besides its score, in KiB: 0 = the score only; more simulates a cache that keeps
    # whole responses (feature snapshots, explanations), so an unbounded cache leaks at a visible rate
    cache_entry_kb: float = Field(0, ge=0, le=1024)
    torch_threads: int = Field(1, ge=1, le=64)
    # run the model on the event loop (default: as fast as a worker thread for this small net, and a replica
    # never uses more than one core) or on one worker thread (the loop keeps parsing requests meanwhile)
    compute_thread: bool = False
    # "model": ready once loaded and warmed; "process": ready as soon as the process is up (the lying kind)
    readiness: Literal["model", "process"] = "model"
    startup_delay_ms: float = Field(0, ge=0, le=600_000)  # simulated slow model load, before loading
    warmup_ms: float = Field(0, ge=0, le=600_000)  # simulated slow warm-up, after loading
    extra_latency_ms: float = Field(0, ge=0, le=60_000)  # added to every predict response
