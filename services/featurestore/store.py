"""The feature store's store of record: a SQLite file seeded from the generator's card population.

The database is created (WAL mode) when missing, from `Generator(seed, n_cards).cards()`, through a temporary
file renamed into place so that a concurrent reader never sees a half-written table. The service then reads
through a read-only connection; for speed it also keeps every row in memory (5,000 cards is well under 1 MB)
with its JSON answer pre-encoded. SQLite stays authoritative: `reload()` re-reads it, and with the config
`cache: false` every request is a real SQLite lookup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from services.common import fastjson
from services.common.schema import STORE_CATEGORICAL, STORE_NUMERIC

COLUMNS: tuple[str, ...] = ("card_id", *STORE_NUMERIC, *STORE_CATEGORICAL)

_SCHEMA = """
CREATE TABLE cards (
    card_id TEXT PRIMARY KEY,
    txn_count_24h INTEGER NOT NULL,
    avg_amount_30d REAL NOT NULL,
    account_age_days INTEGER NOT NULL,
    home_country TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

log = logging.getLogger("featurestore")


def ensure_db(path: Path, seed: int, n_cards: int) -> bool:
    """Create and seed the database when it does not exist. Returns True when it was created."""
    if path.exists():
        return False
    # Imported here: only the first start of a fresh data dir pays for the generator.
    from services.trainer.generator import Generator

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    rows = Generator(seed=seed, n_cards=n_cards).cards()
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(_SCHEMA)
        conn.executemany(
            f"INSERT INTO cards ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            [tuple(r[c] for c in COLUMNS) for r in rows],
        )
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)", [("seed", str(seed)), ("n_cards", str(n_cards))]
        )
        conn.commit()
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    try:
        # link, not rename: if another process created the file meanwhile, theirs wins and ours is dropped.
        os.link(tmp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        tmp.unlink()
    if created:
        log.info("seeded feature store db=%s seed=%d cards=%d", path, seed, n_cards)
    return created


class FeatureStore:
    """Read-only access to the cards table, with an optional in-memory copy of every answer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # mode=ro: this process never writes; WAL lets it read while another process writes.
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._cache: dict[str, bytes] = {}
        self.reload()

    def reload(self) -> int:
        cur = self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM cards")
        self._cache = {row[0]: fastjson.dumps(dict(zip(COLUMNS, row, strict=True))) for row in cur}
        return len(self._cache)

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, card_id: str) -> bytes | None:
        return self._cache.get(card_id)

    def lookup(self, card_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM cards WHERE card_id = ?", (card_id,)).fetchone()
        return None if row is None else dict(zip(COLUMNS, row, strict=True))

    def meta(self) -> dict[str, str]:
        """How the store was seeded: {"seed", "n_cards"} (the generator's card population)."""
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        self._conn.close()
