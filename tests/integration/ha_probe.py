"""What the HA tests share: a writer that tags every row it commits and counts only the
acknowledged ones, the probe table it writes to, and a bounded wait."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from elizadb import engine

# TCP keepalives on the writer's connection: a host that crashes sends no RST, so a client
# waiting for an answer from it would wait for ever (the kernel's default first probe is after
# two hours). With these it learns within about 5 s that the peer is gone, or, once the host
# is back at its address, is refused at the first probe, and reconnects.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 3,
}


def wait_for(what: str, check: Any, timeout_s: float = 120, explain: Any = lambda: "") -> float:
    return engine.wait_until(what, check, timeout_s, interval_s=0.5, on_timeout=explain)


@dataclass
class Writer:
    """Commits one tagged row at a time through the pooler; counts only acknowledged rows, each
    with the address of the server that acknowledged it and the machine's clock when the
    acknowledgement arrived."""

    uri: str
    acks: dict[int, str] = field(default_factory=dict)
    acked_at: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        seq = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.uri, autocommit=True, connect_timeout=3, **KEEPALIVES
                ) as conn:
                    while not self._stop.is_set():
                        seq += 1
                        row = conn.execute(
                            "INSERT INTO ha_probe (seq) VALUES (%s) RETURNING inet_server_addr()",
                            (seq,),
                        ).fetchone()
                        assert row is not None
                        self.acked_at[seq] = time.time()
                        self.acks[seq] = str(row[0])
                        time.sleep(0.02)
            except psycopg.Error:
                time.sleep(0.1)  # the outcome of that commit is unknown: not counted

    def acked_by(self, address: str, after: int = 0) -> bool:
        return any(a == address for s, a in list(self.acks.items()) if s > after)


def setup_probe_table(owner: str) -> None:
    """An empty ha_probe table the agent role may write, through the owner's URI."""
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ha_probe (seq integer PRIMARY KEY)")
        conn.execute("TRUNCATE ha_probe")
        conn.execute("GRANT SELECT, INSERT ON ha_probe TO eliza_agent")


def two_batches_around_a_point(owner: str) -> dt.datetime:
    """Rows 1-50 committed, then a time with a second of no commits on either side, then rows
    51-100: a restore to that time has exactly the first batch."""
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("INSERT INTO ha_probe SELECT generate_series(1, 50)")
        time.sleep(1.0)
        point = dt.datetime.now(dt.UTC)
        time.sleep(1.0)
        conn.execute("INSERT INTO ha_probe SELECT generate_series(51, 100)")
    return point


def stored(owner: str) -> set[int]:
    """The rows of ha_probe, read through the owner's URI."""
    with psycopg.connect(owner, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT seq FROM ha_probe").fetchall()}
