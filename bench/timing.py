"""What the benchmarks share: an operations-per-second loop, a throw-away PostgreSQL schema."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def rate(fn: Callable[[], object], seconds: float, min_ops: int = 20) -> float:
    """Operations per second of fn over about `seconds` (after one warm-up call)."""
    fn()
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        ops += 1
        if ops >= min_ops and time.perf_counter() >= deadline:
            break
    return ops / (time.perf_counter() - start)


class PgSchema:
    """A fresh schema on the named database (search_path), dropped at the end: the
    database's own tables are never touched."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine, text

        self.admin = create_engine(url)
        self.schema = f"bench_{os.urandom(5).hex()}"
        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        sep = "&" if "?" in url else "?"
        self.url = f"{url}{sep}options=-csearch_path%3D{self.schema}"

    def drop(self) -> None:
        from sqlalchemy import text

        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()
