"""The replica's C kernels (csrc/*.c): paged attention, a whole model step and top-p sampling, built with the
machine's C compiler into one shared object and called through ctypes (which releases the GIL for each call).

`load()` returns them, building the first time: the shared object is cached under a name that hashes the
sources, the flags and the CPU (so a tree shared between machines never loads code built for another CPU's
instruction set), in csrc/build/ or, where the tree is read-only (a container), the temp directory. Without a
compiler, or with `FAULTLINE_LLM_KERNEL=0` (the A/B switch of the benchmarks and tests), it returns None and
the replica runs the torch versions, which compute the same things (tests/llm/test_kernels.py compares them).

No string from a request reaches the compiler: its argv is fixed here.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger("llm.kernels")

CSRC = Path(__file__).parent / "csrc"
# -O3 with reassociation (vectorised dot products and sums) but IEEE infinities and NaNs kept (no -ffast-math)
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros",
         "-shared", "-fPIC"]
LIBS = ["-lm"]  # after the source: with --as-needed a library named before it is dropped
NATIVE = ["-march=native"]  # dropped if the compiler refuses it
_lock = threading.Lock()
_loaded: list[Kernels | None] = []


class PagedAttention:
    """The loaded kernel. `__call__` runs one layer's attention for every run in `runs` (see csrc's comment)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        fn = lib.fl_paged_attention
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        fn.argtypes = [p, i64, p, p, p, i64, p, p, p, i64, i64, i64, i64, ctypes.c_float, p]
        fn.restype = None
        self._fn = fn

    def __call__(self, q: torch.Tensor, out: torch.Tensor, cache: torch.Tensor, tables: torch.Tensor,
                 row0: torch.Tensor, nq: torch.Tensor, start: torch.Tensor, scores: torch.Tensor) -> None:
        """q: (N, H*D) rows (any row stride, unit inner stride); out: (N, H*D) contiguous; cache: one layer's
        (num_blocks, block_size, 2, H, D); tables (S, NB), row0 / nq / start (S,) int64; scores: a float
        workspace of at least max(start + nq) * H."""
        _, bs, _, h, d = cache.shape
        # the caller sizes `scores` (KVCache.attend, from the runs' ends: no tensor op here, the call is hot)
        assert q.stride(1) == 1 and out.is_contiguous() and cache.is_contiguous() and tables.is_contiguous()
        self._fn(q.data_ptr(), q.stride(0), out.data_ptr(), cache.data_ptr(), tables.data_ptr(), tables.shape[1],
                 row0.data_ptr(), nq.data_ptr(), start.data_ptr(), row0.shape[0], h, d, bs, d ** -0.5,
                 scores.data_ptr())


class Sampler:
    """csrc/sampling.c: temperature + top-p, one token per row, every row in one call."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        fn = lib.fl_sample_top_p
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        fn.argtypes = [p, i64, i64, i64, p, p, p, p, p, p]
        fn.restype = None
        self._fn = fn

    def __call__(self, logits: torch.Tensor, temps: torch.Tensor, top_ps: torch.Tensor,
                 u: torch.Tensor) -> list[int]:
        """logits (M, V) float32 (unit inner stride); temps, top_ps, u: (M,) float32."""
        m, v = logits.shape
        assert logits.stride(1) == 1 and logits.dtype == torch.float32
        # workspaces per call, not kept: two engines on threads of their own may sample at once (the call
        # releases the GIL); (vocab) probabilities and (vocab) pairs of (float p, int32 id), 8 bytes each
        probs, ranked = torch.empty(v), torch.empty(v, dtype=torch.int64)
        out = torch.empty(m, dtype=torch.int64)
        self._fn(logits.data_ptr(), m, v, logits.stride(0), temps.data_ptr(), top_ps.data_ptr(), u.data_ptr(),
                 out.data_ptr(), probs.data_ptr(), ranked.data_ptr())
        return out.tolist()


def _pad32(n: int) -> int:
    return -(-n // 32) * 32


class Forward:
    """csrc/forward.c: a whole step of the model (every row of a PagedBatch) in one call. `prepare(model)` makes the
    weights it reads once per model: each linear layer's weight transposed to (in, out) with the out dimension
    zero-padded to a multiple of 32, its bias padded alike."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        fn = lib.fl_forward
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        fn.argtypes = [p, p, p, i64, p, p, p, i64, p, i64, p, i64, p, i64, i64, i64, i64, i64, ctypes.c_float, p]
        fn.restype = ctypes.c_int
        self._fn = fn

    @staticmethod
    def prepare(model: torch.nn.Module) -> list[torch.Tensor] | None:
        """The tensors the step reads, in csrc's order but the caches (added per call); None when the model's
        layers are not plain float32 linear layers and layer norms (the int8 variant): torch then."""
        blocks = list(model.blocks)  # type: ignore[attr-defined]
        linears = [m for b in blocks for m in (b.c_attn, b.attn_proj, b.c_fc, b.mlp_proj)]
        norms = [m for b in blocks for m in (b.ln_1, b.ln_2)] + [model.ln_f]  # type: ignore[attr-defined]
        if any(type(m) is not torch.nn.Linear or m.weight.dtype != torch.float32 or m.bias is None for m in linears):
            return None
        if any(type(m) is not torch.nn.LayerNorm or m.weight is None or m.bias is None for m in norms):
            return None

        def wt(w: torch.Tensor) -> torch.Tensor:  # (out, in) -> (in, pad32(out))
            out = torch.zeros(w.shape[1], _pad32(w.shape[0]))
            out[:, : w.shape[0]] = w.detach().t()
            return out

        def pad(b: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(_pad32(b.shape[0]))
            out[: b.shape[0]] = b.detach()
            return out

        with torch.no_grad():
            tensors: list[torch.Tensor] = []
            for b in blocks:
                tensors += [b.ln_1.weight.detach(), b.ln_1.bias.detach(), wt(b.c_attn.weight), pad(b.c_attn.bias),
                            wt(b.attn_proj.weight), pad(b.attn_proj.bias), b.ln_2.weight.detach(),
                            b.ln_2.bias.detach(), wt(b.c_fc.weight), pad(b.c_fc.bias), wt(b.mlp_proj.weight),
                            pad(b.mlp_proj.bias)]
            wte = model.wte.weight.detach()  # type: ignore[attr-defined]
            tensors += [model.ln_f.weight.detach(), model.ln_f.bias.detach(), wt(wte), wte,  # type: ignore[attr-defined]
                        model.wpe.weight.detach()]  # type: ignore[attr-defined]
        return [t.contiguous() for t in tensors]

    def __call__(self, prepared: list[torch.Tensor], caches: list[torch.Tensor], tokens: torch.Tensor,
                 positions: torch.Tensor, slots: torch.Tensor, row0: torch.Tensor, nq: torch.Tensor,
                 start: torch.Tensor, tables: torch.Tensor, logit_rows: torch.Tensor, n_head: int, eps: float,
                 block_size: int) -> torch.Tensor | None:
        """Logits (len(logit_rows), V) of one step, every row's K/V written to `caches` (one per layer); None if
        the kernel could not allocate its workspace. Runs as in PagedAttention (row0, nq, start, tables)."""
        n_layer = len(caches)
        per = 12
        ptrs: list[int] = []
        for layer in range(n_layer):
            ptrs += [t.data_ptr() for t in prepared[layer * per:(layer + 1) * per]] + [caches[layer].data_ptr()]
        ptrs += [t.data_ptr() for t in prepared[n_layer * per:]]
        addr = torch.tensor(ptrs, dtype=torch.int64)
        v, c = prepared[-2].shape  # wte
        logits = torch.empty(logit_rows.shape[0], v)
        assert all(x.is_contiguous() for x in (tokens, positions, slots, row0, nq, start, tables, logit_rows))
        rc = self._fn(tokens.data_ptr(), positions.data_ptr(), slots.data_ptr(), tokens.shape[0], row0.data_ptr(),
                      nq.data_ptr(), start.data_ptr(), row0.shape[0], tables.data_ptr(), tables.shape[1],
                      logit_rows.data_ptr(), logit_rows.shape[0], addr.data_ptr(), n_layer, c, n_head, v,
                      block_size, eps, logits.data_ptr())
        return logits if rc == 0 else None


class Kernels:
    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self.paged_attention = PagedAttention(lib)
        self.sample_top_p = Sampler(lib)
        self.forward = Forward(lib)


def _cpu_tag() -> str:
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:12]


def _build_dirs() -> list[Path]:
    return [CSRC / "build", Path(tempfile.gettempdir()) / f"faultline-kernels-{os.getuid()}"]


def _sources() -> list[Path]:
    return sorted(CSRC.glob("*.c"))


def _compile(cc: str, flags: list[str], out: Path) -> bool:
    tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        proc = subprocess.run([cc, *flags, "-o", str(tmp), *map(str, _sources()), *LIBS], capture_output=True,
                              timeout=120)
        if proc.returncode != 0:
            log.info("kernel build failed cc=%s flags=%s stderr=%s", cc, " ".join(flags),
                     proc.stderr.decode(errors="replace")[-400:])
            return False
        os.replace(tmp, out)  # atomic: a replica starting beside this one loads a whole file or builds its own
        return True
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("kernel build failed cc=%s error=%s", cc, exc)
        return False
    finally:
        tmp.unlink(missing_ok=True)


def build() -> Path | None:
    """The kernels' shared object, compiled if no cached one matches; None if it cannot be built here."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    sources = _sources()
    if cc is None or not sources:
        return None
    source = b"".join(src.name.encode() + src.read_bytes() for src in [*sources, *sorted(CSRC.glob("*.h"))])
    for flags in (NATIVE + FLAGS, FLAGS):
        key = hashlib.sha256(source + " ".join(flags + LIBS).encode() + _cpu_tag().encode()).hexdigest()[:16]
        for folder in _build_dirs():
            out = folder / f"kernels-{key}.so"
            if out.exists():
                return out
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue
            if not os.access(folder, os.W_OK):
                continue
            if _compile(cc, flags, out):
                return out
            break  # the compiler refused these flags: the next set, not the next folder
    return None


def load() -> Kernels | None:
    """The kernels (built and loaded once per process), or None: the torch versions then."""
    if _loaded:  # the hot path (every sampling step): no lock once loaded
        return _loaded[0]
    with _lock:
        if not _loaded:
            found: Kernels | None = None
            if os.environ.get("FAULTLINE_LLM_KERNEL", "1") != "0":
                path = build()
                if path is not None:
                    try:
                        found = Kernels(ctypes.CDLL(str(path)), path)
                    except (OSError, AttributeError) as exc:
                        log.warning("kernels load failed path=%s error=%s", path, exc)
            log.info("kernels backend=%s", backend_of(found))
            _loaded.append(found)
        return _loaded[0]


def backend_of(k: Kernels | None) -> str:
    return "kernel" if k is not None else "torch"


def backend() -> str:
    return backend_of(load())


if __name__ == "__main__":  # `python -m services.llm.kernels`: build ahead (make setup), say where
    k = load()
    print(k.path if k else "no C compiler: the replicas will run the torch versions")
