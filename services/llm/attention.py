"""The paged-attention kernel: csrc/paged_attention.c, built with the machine's C compiler, called through ctypes.

`kernel()` returns the loaded kernel, building it the first time: the shared object is cached under a name
that hashes the source, the flags and the CPU (so a tree shared between machines never loads code built for
another CPU's instruction set), in csrc/build/ or, where the tree is read-only (a container), the temp
directory. Without a compiler, or with `FAULTLINE_LLM_KERNEL=0` (the A/B switch of the benchmarks and tests),
it returns None and the model attends through torch (gather + scaled_dot_product_attention), which computes
the same thing (tests/llm/test_attention_kernel.py compares the two).

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

log = logging.getLogger("llm.attention")

SRC = Path(__file__).parent / "csrc" / "paged_attention.c"
# -O3 with reassociation (vectorised dot products and sums) but IEEE infinities and NaNs kept (no -ffast-math)
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros",
         "-shared", "-fPIC"]
LIBS = ["-lm"]  # after the source: with --as-needed a library named before it is dropped
NATIVE = ["-march=native"]  # dropped if the compiler refuses it
_lock = threading.Lock()
_loaded: list[PagedAttention | None] = []


class PagedAttention:
    """The loaded kernel. `__call__` runs one layer's attention for every run in `runs` (see csrc's comment)."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.path = path
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


def _cpu_tag() -> str:
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:12]


def _build_dirs() -> list[Path]:
    return [SRC.parent / "build", Path(tempfile.gettempdir()) / f"faultline-kernels-{os.getuid()}"]


def _compile(cc: str, flags: list[str], out: Path) -> bool:
    tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        proc = subprocess.run([cc, *flags, "-o", str(tmp), str(SRC), *LIBS], capture_output=True, timeout=120)
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
    """The kernel's shared object, compiled if no cached one matches; None if it cannot be built here."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or not SRC.exists():
        return None
    source = SRC.read_bytes()
    for flags in (NATIVE + FLAGS, FLAGS):
        key = hashlib.sha256(source + " ".join(flags + LIBS).encode() + _cpu_tag().encode()).hexdigest()[:16]
        for folder in _build_dirs():
            out = folder / f"paged_attention-{key}.so"
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


def kernel() -> PagedAttention | None:
    """The kernel (built and loaded once per process), or None: the torch path then."""
    with _lock:
        if not _loaded:
            found: PagedAttention | None = None
            if os.environ.get("FAULTLINE_LLM_KERNEL", "1") != "0":
                path = build()
                if path is not None:
                    try:
                        found = PagedAttention(ctypes.CDLL(str(path)), path)
                    except OSError as exc:
                        log.warning("kernel load failed path=%s error=%s", path, exc)
            log.info("paged attention backend=%s", "kernel" if found else "torch")
            _loaded.append(found)
        return _loaded[0]


def backend() -> str:
    return "kernel" if kernel() is not None else "torch"


if __name__ == "__main__":  # `python -m services.llm.attention`: build ahead (make setup), say where
    k = kernel()
    print(k.path if k else "no kernel: the torch path will be used")
