"""The store: SQLite in WAL mode, numbered schema migrations, and every SQL statement of the project.

One module owns all SQL so the schema, its migrations and the queries change together, and so a
PostgreSQL store can later implement the same methods. Migrations are applied in order at open; the
schema version lives in `PRAGMA user_version` and each applied migration is recorded in
`schema_migrations`. A database newer than this code refuses to open rather than guess.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

# Each migration is a list of statements run in one transaction. Append only; never edit a released one.
MIGRATIONS: list[list[str]] = [
    [  # 1: call records and registrar bindings
        """CREATE TABLE schema_migrations (
               version INTEGER PRIMARY KEY,
               applied_at REAL NOT NULL)""",
        """CREATE TABLE calls (
               id TEXT PRIMARY KEY,
               direction TEXT NOT NULL,
               from_uri TEXT NOT NULL,
               to_uri TEXT NOT NULL,
               status TEXT NOT NULL,
               created_at REAL NOT NULL,
               answered_at REAL,
               ended_at REAL,
               hangup_code INTEGER,
               hangup_reason TEXT,
               hangup_by TEXT,
               data TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX calls_created ON calls (created_at)",
        """CREATE TABLE registrations (
               user TEXT NOT NULL,
               contact TEXT NOT NULL,
               expires_at REAL NOT NULL,
               source TEXT NOT NULL,
               transport TEXT NOT NULL,
               call_id TEXT NOT NULL,
               cseq INTEGER NOT NULL,
               PRIMARY KEY (user, contact))""",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact (RFC 3261 10.3): where requests for `user` go until `expires_at` (Unix
    time), with the flow the REGISTER came over (`source` host:port, `transport`) for NAT traversal."""

    user: str
    contact: str
    expires_at: float
    source: str
    transport: str
    call_id: str
    cseq: int


class SchemaTooNew(Exception):
    """The database was written by a newer softswitch; running on it could corrupt data."""


class Store:
    """A SQLite database opened for the softswitch. Not shared between threads."""

    def __init__(self, conn: sqlite3.Connection, path: str):
        self._db = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path, migrations: list[list[str]] = MIGRATIONS) -> Store:
        """Open (creating it and its folder if needed) and migrate to the newest schema."""
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(conn, path)
            store._migrate(migrations)
        except BaseException:
            conn.close()
            raise
        return store

    @property
    def version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    @property
    def journal_mode(self) -> str:
        return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    def applied_migrations(self) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT version FROM schema_migrations ORDER BY version")]

    def _migrate(self, migrations: list[list[str]]) -> None:
        current = self.version
        if current > len(migrations):
            raise SchemaTooNew(
                f"store {self.path} has schema version {current}, newer than this softswitch knows "
                f"({len(migrations)}); upgrade softswitch or point [store] path at another file"
            )
        for version in range(current + 1, len(migrations) + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in migrations[version - 1]:
                    self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, time.time())
                )
                self._db.execute(f"PRAGMA user_version = {version:d}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()

    # -- registrar bindings ------------------------------------------------------------------------
    def bindings(self, user: str, now: float) -> list[Binding]:
        """The live contacts of a user, soonest to expire last."""
        rows = self._db.execute(
            "SELECT user, contact, expires_at, source, transport, call_id, cseq FROM registrations "
            "WHERE user = ? AND expires_at > ? ORDER BY expires_at DESC, contact",
            (user, now),
        )
        return [Binding(*row) for row in rows]

    def save_binding(self, binding: Binding) -> None:
        self._db.execute(
            "INSERT INTO registrations (user, contact, expires_at, source, transport, call_id, cseq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user, contact) DO UPDATE SET "
            "expires_at = excluded.expires_at, source = excluded.source, transport = excluded.transport, "
            "call_id = excluded.call_id, cseq = excluded.cseq",
            (
                binding.user,
                binding.contact,
                binding.expires_at,
                binding.source,
                binding.transport,
                binding.call_id,
                binding.cseq,
            ),
        )

    def delete_binding(self, user: str, contact: str) -> None:
        self._db.execute("DELETE FROM registrations WHERE user = ? AND contact = ?", (user, contact))

    def delete_bindings(self, user: str) -> None:
        self._db.execute("DELETE FROM registrations WHERE user = ?", (user,))

    def purge_bindings(self, now: float) -> int:
        """Forget expired contacts; returns how many."""
        return self._db.execute("DELETE FROM registrations WHERE expires_at <= ?", (now,)).rowcount

    def tables(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
