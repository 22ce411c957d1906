"""A persistent outbox in SQLite: notifications and the engine state, written in one transaction."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.engine import AlertEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    notification_key TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    last_error TEXT,
    finished_at REAL,
    UNIQUE (subscription, notification_key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, subscription, fingerprint, id);
CREATE TABLE IF NOT EXISTS engine_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    saved_at REAL NOT NULL
);
"""

# The oldest pending row of each (subscription, fingerprint) only: a resolved notification never
# overtakes the firing one still being retried for the same alert.
_OLDEST_OF_ITS_ALERT = """
  id = (SELECT MIN(id) FROM outbox AS p
        WHERE p.status = 'pending' AND p.subscription = o.subscription AND p.fingerprint = o.fingerprint)
"""
_DUE = f"""
SELECT id, subscription, notification_key, event, created_at, attempts FROM outbox AS o
WHERE status = 'pending' AND subscription = ? AND next_attempt <= ? AND {_OLDEST_OF_ITS_ALERT}
ORDER BY id
LIMIT ?
"""
_NEXT_DUE = f"""
SELECT MIN(next_attempt) FROM outbox AS o
WHERE status = 'pending' AND subscription = ? AND {_OLDEST_OF_ITS_ALERT}
"""


@dataclass(frozen=True)
class OutboxRow:
    """One notification waiting for delivery to one subscription."""

    id: int
    subscription: str
    notification_key: str
    event: AlertEvent | None
    """None when the stored event cannot be decoded (``error`` says why): it can never be delivered."""
    created_at: float
    attempts: int
    error: str = ""


def _decoded(
    row_id: int, subscription: str, key: str, event: str, created_at: float, attempts: int
) -> OutboxRow:
    # One row at a time: a row written by another version, or damaged, must not hold up the others.
    try:
        decoded: AlertEvent | None = AlertEvent.from_dict(json.loads(event))
        error = ""
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        decoded, error = None, f"cannot decode the stored notification: {exc!r}"
    return OutboxRow(row_id, subscription, key, decoded, created_at, attempts, error)


class Outbox:
    """The SQLite file; safe to share between the recording thread and the delivery threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            # WAL + synchronous=FULL: a committed transaction survives a crash or power loss.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error:
            self._db.close()  # e.g. "file is not a database"
            raise
        self._saved_state: str | None = None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def record(
        self, rows: Iterable[tuple[str, AlertEvent]], engine_state: Mapping[str, Any] | None, now: float
    ) -> int:
        """Insert (subscription name, event) rows and save the engine state atomically; rows newly inserted."""
        rows = list(rows)
        state_json = None if engine_state is None else json.dumps(engine_state, separators=(",", ":"))
        if not rows and state_json == self._saved_state:
            return 0  # nothing new: spare the fsync on every quiet evaluation
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                inserted = 0
                for subscription, event in rows:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO outbox "
                        "(subscription, fingerprint, notification_key, event, created_at, next_attempt) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            subscription,
                            event.fingerprint,
                            event.notification_key,
                            json.dumps(event.to_dict(), separators=(",", ":")),
                            now,
                            now,
                        ),
                    )
                    inserted += cursor.rowcount
                if state_json is not None:
                    self._db.execute(
                        "INSERT INTO engine_state (id, state, saved_at) VALUES (1, ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET state = excluded.state, saved_at = excluded.saved_at",
                        (state_json, now),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does): a second ROLLBACK would
                # raise "no transaction is active" and hide the real error.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            if state_json is not None:
                self._saved_state = state_json
        return inserted

    def engine_state(self) -> dict[str, Any] | None:
        """The engine state saved last, or None; ValueError when it is not a JSON object."""
        with self._lock:
            row = self._db.execute("SELECT state FROM engine_state WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            state = json.loads(row[0])
        except ValueError as error:
            raise ValueError(f"saved alert engine state is not valid JSON: {error}") from None
        if not isinstance(state, dict):
            raise ValueError("saved alert engine state is not a JSON object")
        return state

    def due(self, subscription: str, now: float, limit: int = 100) -> list[OutboxRow]:
        """A subscription's rows whose next attempt is due, at most one per alert, oldest first."""
        with self._lock:
            rows = self._db.execute(_DUE, (subscription, now, limit)).fetchall()
        return [_decoded(*row) for row in rows]

    def pending_subscriptions(self) -> set[str]:
        """Names of the subscriptions that have pending rows."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT subscription FROM outbox WHERE status = 'pending'")
            return {str(name) for (name,) in rows.fetchall()}

    def _update(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, params)

    def delivered(self, row_id: int, attempts: int, now: float) -> None:
        """Mark a row delivered."""
        self._update(
            "UPDATE outbox SET status = 'delivered', attempts = ?, finished_at = ?, last_error = NULL "
            "WHERE id = ?",
            (attempts, now, row_id),
        )

    def retry(self, row_id: int, attempts: int, next_attempt: float, error: str) -> None:
        """Schedule the next attempt of a row."""
        self._update(
            "UPDATE outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
            (attempts, next_attempt, error, row_id),
        )

    def postpone(self, row_id: int, next_attempt: float) -> None:
        """Move a row's next attempt without counting an attempt."""
        self._update("UPDATE outbox SET next_attempt = ? WHERE id = ?", (next_attempt, row_id))

    def failed(self, row_id: int, attempts: int, error: str, now: float) -> None:
        """Give up on a row."""
        self._update(
            "UPDATE outbox SET status = 'failed', attempts = ?, last_error = ?, finished_at = ? WHERE id = ?",
            (attempts, error, now, row_id),
        )

    def counts(self) -> dict[str, int]:
        """Rows per status (pending, delivered, failed)."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
        counts = {"pending": 0, "delivered": 0, "failed": 0}
        counts.update({str(status): int(count) for status, count in rows})
        return counts

    def pending_count(self) -> int:
        """Rows waiting for delivery (an index lookup, unlike :meth:`counts`)."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()
        return int(count)

    def next_due(self, subscription: str) -> float | None:
        """When the subscription's next row becomes due (None when it has none pending).

        Only the oldest pending row of each alert counts: a later one waiting behind it may have an
        attempt time long past, and counting it would wake the delivery thread for nothing, every 10 ms.
        """
        with self._lock:
            row = self._db.execute(_NEXT_DUE, (subscription,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict (for inspection and tests), oldest first."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT id, subscription, fingerprint, notification_key, created_at, attempts, next_attempt, "
                "status, last_error, finished_at FROM outbox ORDER BY id"
            )
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def prune(self, before: float) -> int:
        """Delete delivered and failed rows finished before ``before``; rows deleted."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND finished_at < ?", (before,)
            )
        return cursor.rowcount
