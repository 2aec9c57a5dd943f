"""The store: SQLite in WAL mode, numbered schema migrations, and every SQL statement of the project.

One module owns all SQL so the schema, its migrations and the queries change together, and so a
PostgreSQL store can later implement the same methods. Migrations are applied in order at open; the
schema version lives in `PRAGMA user_version` and each applied migration is recorded in
`schema_migrations`. A database newer than this code refuses to open rather than guess.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from softswitch.checkpointer import WalCheckpointer
from softswitch.guard import Ban

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
    [  # 2: call detail records: trunk and user of a call, and its SIP legs with their media statistics
        "ALTER TABLE calls ADD COLUMN trunk TEXT",
        "ALTER TABLE calls ADD COLUMN user TEXT",
        """CREATE TABLE call_legs (
               call_id TEXT NOT NULL REFERENCES calls (id),
               idx INTEGER NOT NULL,
               role TEXT NOT NULL,
               sip_call_id TEXT NOT NULL,
               local_tag TEXT,
               remote_tag TEXT,
               remote_uri TEXT NOT NULL,
               remote_addr TEXT,
               status_code INTEGER,
               created_at REAL NOT NULL,
               answered_at REAL,
               ended_at REAL,
               media TEXT NOT NULL DEFAULT '{}',
               PRIMARY KEY (call_id, idx))""",
        "CREATE INDEX calls_status ON calls (status, created_at)",
        # Small (live calls only): the restart sweep for calls a crash left open reads just this.
        "CREATE INDEX calls_open ON calls (created_at) WHERE ended_at IS NULL",
    ],
    [  # 3: API keys (each with one or more secrets: a rotated key keeps its old one until the grace ends)
        """CREATE TABLE api_keys (
               id TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               scopes TEXT NOT NULL,
               test INTEGER NOT NULL,
               created_at REAL NOT NULL,
               revoked_at REAL)""",
        """CREATE TABLE api_key_secrets (
               key_id TEXT NOT NULL REFERENCES api_keys (id),
               prefix TEXT NOT NULL,
               hash TEXT NOT NULL,
               created_at REAL NOT NULL,
               expires_at REAL)""",
        "CREATE INDEX api_key_secrets_prefix ON api_key_secrets (prefix)",
        "CREATE INDEX api_key_secrets_key ON api_key_secrets (key_id)",
    ],
    [  # 4: idempotency keys of API mutations: the first response, replayed for 24 h
        """CREATE TABLE idempotency_keys (
               api_key_id TEXT NOT NULL,
               key TEXT NOT NULL,
               fingerprint TEXT NOT NULL,
               state TEXT NOT NULL,
               status INTEGER,
               headers TEXT,
               body BLOB,
               created_at REAL NOT NULL,
               locked_until REAL NOT NULL,
               expires_at REAL NOT NULL,
               PRIMARY KEY (api_key_id, key))""",
        "CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at)",
    ],
    [  # 5: call recordings (the WAV files under [media] recordings_dir)
        """CREATE TABLE recordings (
               id TEXT PRIMARY KEY,
               call_id TEXT NOT NULL,
               path TEXT NOT NULL,
               channels INTEGER NOT NULL,
               status TEXT NOT NULL,
               duration_s REAL NOT NULL DEFAULT 0,
               size INTEGER NOT NULL DEFAULT 0,
               error TEXT,
               created_at REAL NOT NULL)""",
        "CREATE INDEX recordings_call ON recordings (call_id)",
        "CREATE INDEX recordings_created ON recordings (created_at)",
    ],
    [  # 6: test calls (placed with a test API key, answered by the simulated far end) apart from live ones
        "ALTER TABLE calls ADD COLUMN test INTEGER NOT NULL DEFAULT 0",
    ],
    [  # 7: audio files uploaded through the API, to play into calls
        """CREATE TABLE audio_files (
               id TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               path TEXT NOT NULL,
               size INTEGER NOT NULL,
               duration_s REAL NOT NULL,
               test INTEGER NOT NULL,
               created_at REAL NOT NULL)""",
        "CREATE INDEX audio_files_created ON audio_files (created_at)",
    ],
    [  # 8: webhooks: endpoints, the outbox of events, one delivery per (endpoint, event), every attempt
        """CREATE TABLE webhook_endpoints (
               id TEXT PRIMARY KEY,
               url TEXT NOT NULL,
               events TEXT NOT NULL,
               enabled INTEGER NOT NULL,
               description TEXT NOT NULL,
               secret TEXT NOT NULL,
               previous_secret TEXT,
               previous_expires_at REAL,
               test INTEGER NOT NULL,
               created_at REAL NOT NULL)""",
        "CREATE INDEX webhook_endpoints_created ON webhook_endpoints (created_at)",
        """CREATE TABLE webhook_events (
               id TEXT PRIMARY KEY,
               type TEXT NOT NULL,
               call_id TEXT,
               payload TEXT NOT NULL,
               created_at REAL NOT NULL)""",
        """CREATE TABLE webhook_deliveries (
               id TEXT PRIMARY KEY,
               endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id),
               event_id TEXT NOT NULL REFERENCES webhook_events (id),
               call_id TEXT,
               status TEXT NOT NULL,
               attempt INTEGER NOT NULL,
               next_attempt_at REAL NOT NULL,
               last_status_code INTEGER,
               last_error TEXT,
               last_latency_ms REAL,
               created_at REAL NOT NULL,
               updated_at REAL NOT NULL)""",
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending'",
        "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at)",
        "CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, call_id, id) "
        "WHERE status = 'pending'",
        """CREATE TABLE webhook_attempts (
               delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id),
               attempt INTEGER NOT NULL,
               at REAL NOT NULL,
               status_code INTEGER,
               latency_ms REAL,
               error TEXT,
               PRIMARY KEY (delivery_id, attempt))""",
    ],
    [  # 9: a call's own status_callback (an endpoint tied to one call), signed with its API key's secret
        "ALTER TABLE webhook_endpoints ADD COLUMN call_id TEXT",
        "CREATE INDEX webhook_endpoints_call ON webhook_endpoints (call_id) WHERE call_id IS NOT NULL",
        "ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT",
    ],
    [  # 10: settings the softswitch makes for itself (the secret signing route-started call flows' requests)
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    [  # 11: stored call flow scenarios (YAML), by name per mode (test keys' apart from live ones)
        """CREATE TABLE scenarios (
               id TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               script TEXT NOT NULL,
               test INTEGER NOT NULL,
               created_at REAL NOT NULL,
               updated_at REAL NOT NULL,
               UNIQUE (name, test))""",
        "CREATE INDEX scenarios_created ON scenarios (created_at)",
    ],
    [  # 12: audio files converted after the upload (WAV, FLAC, OGG, MP3): status pending, ready or error
        "ALTER TABLE audio_files ADD COLUMN status TEXT NOT NULL DEFAULT 'ready'",
        "ALTER TABLE audio_files ADD COLUMN error TEXT",
        "ALTER TABLE audio_files ADD COLUMN format TEXT NOT NULL DEFAULT 'WAV'",
    ],
    [  # 13: source addresses banned by the SIP edge (softswitch.guard), lifted by `softswitch bans lift`
        """CREATE TABLE bans (
               address TEXT PRIMARY KEY,
               since REAL NOT NULL,
               until REAL NOT NULL,
               reason TEXT NOT NULL,
               failures INTEGER NOT NULL DEFAULT 0)""",
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


DIRECTIONS = frozenset({"inbound", "outbound", "internal"})
CALL_STATUSES = frozenset(
    {"queued", "initiated", "ringing", "answered", "completed", "failed", "busy", "no-answer", "canceled"}
)
HANGUP_BY = frozenset({"caller", "callee", "system", "api", "app"})  # api: the control API; app: a call flow
LEG_ROLES = frozenset({"inbound", "outbound", "api"})  # api: the API's own end of a call it placed


@dataclass(slots=True)
class LegRecord:
    """One SIP dialog of a call, as the B2BUA saw it: `idx` orders the legs of the call (0 is the leg
    the call started on), `role` says which side created it, `media` holds its RTP statistics
    (`rx_packets`, `tx_packets`, `lost`, `loss_pct`, `jitter_ms`, `mos`, ...)."""

    idx: int
    role: str
    sip_call_id: str
    remote_uri: str
    created_at: float
    local_tag: str | None = None
    remote_tag: str | None = None
    remote_addr: str | None = None
    status_code: int | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    media: dict = field(default_factory=dict)


@dataclass(slots=True)
class CallRecord:
    """The call detail record of one call. It is saved while the call is live too, so a record whose
    `ended_at` is None after a restart is a call the crash cut off."""

    id: str
    direction: str
    from_uri: str
    to_uri: str
    status: str
    created_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    hangup_code: int | None = None
    hangup_reason: str | None = None
    hangup_by: str | None = None
    trunk: str | None = None
    user: str | None = None
    test: bool = False  # placed with a test API key: listed to test keys only
    legs: list[LegRecord] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        """Talk time, what billing counts: None unless the call was answered and has ended."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.answered_at

    @property
    def ring_s(self) -> float | None:
        """How long the caller waited: until the answer, or until the end of an unanswered call;
        None while still waiting."""
        until = self.answered_at if self.answered_at is not None else self.ended_at
        return None if until is None else until - self.created_at


@dataclass(slots=True)
class RecordingRecord:
    """A call recording's row: its WAV file and what the engine reported when it closed it."""

    id: str
    call_id: str
    path: str
    channels: int
    status: str  # in-progress, paused, completed, failed
    duration_s: float
    size: int
    error: str | None
    created_at: float


_RECORDING_COLUMNS = "id, call_id, path, channels, status, duration_s, size, error, created_at"


@dataclass(slots=True)
class AudioRecord:
    """An audio file uploaded to play into calls: where it is, and whose (test keys' uploads apart)."""

    id: str
    name: str
    path: str
    size: int
    duration_s: float
    test: bool
    created_at: float
    status: str = "ready"  # pending (being converted), ready (`path` is 8 kHz PCM16 WAV), error
    error: str | None = None
    format: str = "WAV"  # as uploaded: WAV, FLAC, OGG or MP3


_AUDIO_COLUMNS = "id, name, path, size, duration_s, test, created_at, status, error, format"


@dataclass(slots=True)
class ScenarioRecord:
    """A stored call flow scenario: its YAML `script` as saved (softswitch.flows.scenarios)."""

    id: str
    name: str
    script: str
    test: bool
    created_at: float
    updated_at: float


_SCENARIO_COLUMNS = "id, name, script, test, created_at, updated_at"


def _scenario_from_row(row: tuple) -> ScenarioRecord:
    rec = ScenarioRecord(*row)
    rec.test = bool(rec.test)
    return rec


def _audio_row(a: AudioRecord) -> tuple:
    return (a.id, a.name, a.path, a.size, a.duration_s, int(a.test), a.created_at, a.status, a.error, a.format)


def _audio_from_row(row: tuple) -> AudioRecord:
    audio = AudioRecord(*row)
    audio.test = bool(audio.test)
    return audio


def _recording_row(rec: RecordingRecord) -> tuple:
    return (
        rec.id,
        rec.call_id,
        rec.path,
        rec.channels,
        rec.status,
        rec.duration_s,
        rec.size,
        rec.error,
        rec.created_at,
    )


def _filters(*pairs: tuple[str, object]) -> tuple[list[str], list]:
    """The WHERE clauses whose value is given, and their arguments."""
    where = [clause for clause, value in pairs if value is not None]
    return where, [value for _, value in pairs if value is not None]


_CALL_COLUMNS = (  # in CallRecord's field order
    "id, direction, from_uri, to_uri, status, created_at, answered_at, ended_at, "
    "hangup_code, hangup_reason, hangup_by, trunk, user, test, data"
)
_LEG_COLUMNS = (  # in LegRecord's field order, after call_id
    "call_id, idx, role, sip_call_id, remote_uri, created_at, local_tag, remote_tag, remote_addr, "
    "status_code, answered_at, ended_at, media"
)
_MAX_PARAMS = 500  # below SQLite's oldest limit on ? parameters per statement (999)


def _check_call(record: CallRecord) -> None:
    """Reject values the queries would silently never match (a typo in a status hides the call)."""
    problems = []
    if record.direction not in DIRECTIONS:
        problems.append(f"direction {record.direction!r}")
    if record.status not in CALL_STATUSES:
        problems.append(f"status {record.status!r}")
    if record.hangup_by is not None and record.hangup_by not in HANGUP_BY:
        problems.append(f"hangup_by {record.hangup_by!r}")
    seen: set[int] = set()
    for leg in record.legs:
        if leg.role not in LEG_ROLES:
            problems.append(f"leg {leg.idx} role {leg.role!r}")
        if leg.idx in seen:
            problems.append(f"leg idx {leg.idx} repeated")
        seen.add(leg.idx)
    if problems:
        raise ValueError(f"call {record.id}: invalid " + ", ".join(problems))


def _json(value: dict) -> str:
    return json.dumps(value, separators=(",", ":")) if value else "{}"


_UPSERT_CALL = (
    f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * 15)}) ON CONFLICT (id) DO UPDATE SET "
    "direction = excluded.direction, from_uri = excluded.from_uri, to_uri = excluded.to_uri, "
    "status = excluded.status, created_at = excluded.created_at, answered_at = excluded.answered_at, "
    "ended_at = excluded.ended_at, hangup_code = excluded.hangup_code, "
    "hangup_reason = excluded.hangup_reason, hangup_by = excluded.hangup_by, trunk = excluded.trunk, "
    "user = excluded.user, test = excluded.test, data = excluded.data"
)
_UPSERT_LEG = (
    f"INSERT INTO call_legs ({_LEG_COLUMNS}) VALUES ({', '.join('?' * 13)}) "
    "ON CONFLICT (call_id, idx) DO UPDATE SET "
    "role = excluded.role, sip_call_id = excluded.sip_call_id, local_tag = excluded.local_tag, "
    "remote_tag = excluded.remote_tag, remote_uri = excluded.remote_uri, "
    "remote_addr = excluded.remote_addr, status_code = excluded.status_code, "
    "created_at = excluded.created_at, answered_at = excluded.answered_at, "
    "ended_at = excluded.ended_at, media = excluded.media"
)


@functools.cache
def _delete_legs_sql(keep: int) -> str:
    """The legs of a call other than the `keep` indexes bound after its id (its legs no longer recorded)."""
    return f"DELETE FROM call_legs WHERE call_id = ? AND idx NOT IN ({', '.join('?' * keep)})"


def _call_row(record: CallRecord) -> tuple:
    return (
        record.id,
        record.direction,
        record.from_uri,
        record.to_uri,
        record.status,
        record.created_at,
        record.answered_at,
        record.ended_at,
        record.hangup_code,
        record.hangup_reason,
        record.hangup_by,
        record.trunk,
        record.user,
        int(record.test),
        _json(record.data),
    )


def _leg_row(call_id: str, leg: LegRecord) -> tuple:
    return (
        call_id,
        leg.idx,
        leg.role,
        leg.sip_call_id,
        leg.remote_uri,
        leg.created_at,
        leg.local_tag,
        leg.remote_tag,
        leg.remote_addr,
        leg.status_code,
        leg.answered_at,
        leg.ended_at,
        _json(leg.media),
    )


def _call_from_row(row: tuple) -> CallRecord:
    *fields, test, data = row
    return CallRecord(*fields, test=bool(test), data=json.loads(data))


def _leg_from_row(row: tuple) -> LegRecord:
    _call_id, *fields, media = row
    return LegRecord(*fields, media=json.loads(media))


@dataclass(slots=True)
class ApiKeyRecord:
    """An API key as stored: who it is for and what it may do, never its secret (only a salted hash of each
    of its secrets is kept, in `ApiKeySecret` rows). `prefix` is the lookup prefix of its current secret,
    shown to tell keys apart; `previous_expires_at` is when the secret replaced by the last rotation stops
    working (Unix time; None if the key was never rotated)."""

    id: str
    name: str
    scopes: list[str]
    test: bool
    created_at: float
    revoked_at: float | None = None
    prefix: str = ""
    previous_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class ApiKeySecret:
    """One secret of a key: `prefix` (the start of the secret, indexed) finds the candidate rows, `hash`
    (`api.auth.hash_secret`) proves the secret. `expires_at` is None for the current secret."""

    key_id: str
    prefix: str
    hash: str
    created_at: float
    expires_at: float | None = None


@dataclass(slots=True)
class IdempotencyRecord:
    """A mutation made with an `Idempotency-Key`: `pending` while it executes (until `locked_until`, after
    which a crashed attempt is forgotten), then `done` with the response to replay until `expires_at`."""

    api_key_id: str
    key: str
    fingerprint: str
    state: str
    created_at: float
    locked_until: float
    expires_at: float
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


_KEY_COLUMNS = (
    "k.id, k.name, k.scopes, k.test, k.created_at, k.revoked_at, "
    "(SELECT prefix FROM api_key_secrets c WHERE c.key_id = k.id AND c.expires_at IS NULL), "
    "(SELECT MAX(expires_at) FROM api_key_secrets o WHERE o.key_id = k.id)"
)
_IDEMPOTENCY_COLUMNS = (
    "api_key_id, key, fingerprint, state, created_at, locked_until, expires_at, status, headers, body"
)


def _key_from_row(row: tuple) -> ApiKeyRecord:
    key_id, name, scopes, test, created_at, revoked_at, prefix, previous = row
    return ApiKeyRecord(key_id, name, json.loads(scopes), bool(test), created_at, revoked_at, prefix or "", previous)


def _idempotency_from_row(row: tuple) -> IdempotencyRecord:
    *fields, headers, body = row
    pairs = [(name, value) for name, value in json.loads(headers or "[]")]
    return IdempotencyRecord(*fields, headers=pairs, body=bytes(body or b""))


@dataclass(slots=True)
class WebhookEndpoint:
    """Where events are POSTed. `events` holds event types or "*"; `secret` signs every delivery, and
    `previous_secret` too until `previous_expires_at` (a rotation's grace). `test`: endpoints of test keys
    receive test calls' events only, live keys' live calls' only."""

    id: str
    url: str
    events: list[str]
    enabled: bool
    description: str
    secret: str
    previous_secret: str | None
    previous_expires_at: float | None
    test: bool
    created_at: float
    call_id: str | None = None  # a call's status_callback: that call's events only, not listed with the others

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """An outbox row: the JSON body every endpoint receives for one event."""

    id: str
    type: str
    call_id: str | None
    payload: bytes
    created_at: float


@dataclass(slots=True)
class WebhookDelivery:
    """One event to one endpoint: pending until delivered or given up (failed)."""

    id: str
    endpoint_id: str
    event_id: str
    call_id: str | None
    status: str
    attempt: int
    next_attempt_at: float
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: float | None
    created_at: float
    updated_at: float
    event_type: str = ""


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    delivery_id: str
    attempt: int
    at: float
    status_code: int | None
    latency_ms: float | None
    error: str | None


_ENDPOINT_COLUMNS = (
    "id, url, events, enabled, description, secret, previous_secret, previous_expires_at, test, created_at, call_id"
)
_DELIVERY_COLUMNS = (
    "d.id, d.endpoint_id, d.event_id, d.call_id, d.status, d.attempt, d.next_attempt_at, d.last_status_code, "
    "d.last_error, d.last_latency_ms, d.created_at, d.updated_at, e.type"
)
_DELIVERY_FROM = "webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"


def _endpoint_from_row(row: tuple) -> WebhookEndpoint:
    r = list(row)
    r[2], r[3], r[8] = json.loads(r[2]), bool(r[3]), bool(r[8])
    return WebhookEndpoint(*r)


class SchemaTooNew(Exception):
    """The database was written by a newer softswitch; running on it could corrupt data."""


class Store:
    """A SQLite database opened for the softswitch. Not shared between threads."""

    def __init__(self, conn: sqlite3.Connection, path: str):
        self._db = conn
        self.path = path
        self.checkpointer: WalCheckpointer | None = None
        # bumped by every write to webhook_endpoints, so a reader's cache of them knows when to drop it
        self.webhook_endpoints_version = 0

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

    def checkpoint_in_background(self, interval_s: float = 1.0) -> None:
        """Leave WAL checkpoints to a thread (`softswitch.checkpointer`): this connection's commits never
        copy the WAL into the database file and fsync, which would stop the event loop that makes them."""
        if self.checkpointer is None and self.path != ":memory:":
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute("PRAGMA journal_size_limit=16777216")  # a WAL started over is cut back to 16 MB
            self.checkpointer = WalCheckpointer(self.path, interval_s)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
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

    # -- bans ----------------------------------------------------------------------------------------
    def save_ban(self, ban: Ban) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO bans (address, since, until, reason, failures) VALUES (?, ?, ?, ?, ?)",
            (ban.address, ban.since, ban.until, ban.reason, ban.failures),
        )

    def bans(self, now: float) -> list[Ban]:
        """Bans in force at `now`, oldest first (expired ones are deleted on the way)."""
        self._db.execute("DELETE FROM bans WHERE until <= ?", (now,))
        rows = self._db.execute("SELECT address, since, until, reason, failures FROM bans ORDER BY since, address")
        return [Ban(*row) for row in rows]

    def delete_ban(self, address: str) -> bool:
        return self._db.execute("DELETE FROM bans WHERE address = ?", (address,)).rowcount > 0

    # -- call detail records -----------------------------------------------------------------------
    def save_call(self, record: CallRecord) -> None:
        """Write the call and its legs exactly as `record` has them, in one transaction, so a crash
        never leaves a call without its legs. Saving the same record again changes nothing; legs no
        longer in `record.legs` are deleted."""
        self.save_calls([record])

    def save_calls(self, records: Iterable[CallRecord]) -> None:
        """`save_call` for many records in one transaction (one commit: what a busy switch needs). Each
        statement runs once over all the records (`executemany`), not once per record: the group commit
        of a busy switch holds dozens of them."""
        records = list(records)
        for record in records:
            _check_call(record)
        deletes: dict[int, list[tuple]] = {}  # legs to keep per record -> its DELETE's parameter rows
        for record in records:
            keep = [leg.idx for leg in record.legs]
            deletes.setdefault(len(keep), []).append((record.id, *keep))
        leg_rows = [_leg_row(record.id, leg) for record in records for leg in record.legs]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(_UPSERT_CALL, [_call_row(record) for record in records])
            for count, rows in deletes.items():
                self._db.executemany(_delete_legs_sql(count), rows)
            self._db.executemany(_UPSERT_LEG, leg_rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def get_call(self, call_id: str) -> CallRecord | None:
        row = self._db.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else self._with_legs([_call_from_row(row)])[0]

    def list_calls(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        status: str | None = None,
        after: float | None = None,
        direction: str | None = None,
        from_uri: str | None = None,
        to_uri: str | None = None,
        starting_after: str | None = None,
        test: bool | None = None,
    ) -> list[CallRecord]:
        """Newest first, filtered (`before`/`after` bound `created_at`; `from_uri`/`to_uri` match a
        substring, so a number finds its SIP URIs); page back with `starting_after`, the last call's id."""
        rows = self._newest_first(
            "calls",
            _CALL_COLUMNS,
            limit,
            starting_after,
            ("created_at < ?", before),
            ("created_at > ?", after),
            ("status = ?", status),
            ("direction = ?", direction),
            ("instr(from_uri, ?) > 0", from_uri),
            ("instr(to_uri, ?) > 0", to_uri),
            ("test = ?", None if test is None else int(test)),
        )
        return self._with_legs([_call_from_row(row) for row in rows])

    def _newest_first(self, table: str, columns: str, limit: int, starting_after: str | None, *filters) -> list:
        """Rows of `table` newest first, the `filters` ((clause, value) pairs) whose value is given, after
        the row `starting_after` (an id) when given: the cursor pagination of the API's lists."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        where, args = _filters(*filters)
        if starting_after is not None:
            where.append(f"(created_at, id) < (SELECT created_at, id FROM {table} WHERE id = ?)")
            args.append(starting_after)
        sql = f"SELECT {columns} FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._db.execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit)).fetchall()

    # -- recordings ------------------------------------------------------------------------------------
    def save_recording(self, rec: RecordingRecord) -> None:
        with self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO recordings ({_RECORDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _recording_row(rec),
            )

    def get_recording(self, rec_id: str) -> RecordingRecord | None:
        row = self._db.execute(f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE id = ?", (rec_id,)).fetchone()
        return None if row is None else RecordingRecord(*row)

    def open_recordings(self) -> list[RecordingRecord]:
        """Recordings still running or paused: at start-up their writer was cut off by a crash."""
        rows = self._db.execute(
            f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE status IN ('in-progress', 'paused') "
            "ORDER BY created_at, id"
        )
        return [RecordingRecord(*row) for row in rows]

    def list_recordings(
        self,
        *,
        limit: int = 50,
        call_id: str | None = None,
        before: float | None = None,
        after: float | None = None,
        starting_after: str | None = None,
        test: bool | None = None,
    ) -> list[RecordingRecord]:
        """Newest first, as list_calls (`test`: only recordings of test calls, or of live ones)."""
        rows = self._newest_first(
            "recordings",
            _RECORDING_COLUMNS,
            limit,
            starting_after,
            ("call_id = ?", call_id),
            ("created_at < ?", before),
            ("created_at > ?", after),
            ("call_id IN (SELECT id FROM calls WHERE test = ?)", None if test is None else int(test)),
        )
        return [RecordingRecord(*row) for row in rows]

    # -- audio files -----------------------------------------------------------------------------------
    def save_audio(self, audio: AudioRecord) -> None:
        with self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO audio_files ({_AUDIO_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _audio_row(audio),
            )

    def get_audio(self, audio_id: str) -> AudioRecord | None:
        row = self._db.execute(f"SELECT {_AUDIO_COLUMNS} FROM audio_files WHERE id = ?", (audio_id,)).fetchone()
        return None if row is None else _audio_from_row(row)

    def list_audio(self, *, limit: int = 50, test: bool, starting_after: str | None = None) -> list[AudioRecord]:
        rows = self._newest_first("audio_files", _AUDIO_COLUMNS, limit, starting_after, ("test = ?", int(test)))
        return [_audio_from_row(row) for row in rows]

    def delete_audio(self, audio_id: str) -> bool:
        with self._db:
            return self._db.execute("DELETE FROM audio_files WHERE id = ?", (audio_id,)).rowcount > 0

    # -- scenarios -------------------------------------------------------------------------------------
    def save_scenario(self, rec: ScenarioRecord) -> None:
        """Insert or replace (by id); sqlite3.IntegrityError when the name is taken by another scenario."""
        with self._db:
            self._db.execute(
                f"INSERT INTO scenarios ({_SCENARIO_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET name = excluded.name, script = excluded.script, updated_at = excluded.updated_at",
                (rec.id, rec.name, rec.script, int(rec.test), rec.created_at, rec.updated_at),
            )

    def get_scenario(self, scenario_id: str) -> ScenarioRecord | None:
        row = self._db.execute(f"SELECT {_SCENARIO_COLUMNS} FROM scenarios WHERE id = ?", (scenario_id,)).fetchone()
        return None if row is None else _scenario_from_row(row)

    def scenario_named(self, name: str, test: bool = False) -> ScenarioRecord | None:
        row = self._db.execute(
            f"SELECT {_SCENARIO_COLUMNS} FROM scenarios WHERE name = ? AND test = ?", (name, int(test))
        ).fetchone()
        return None if row is None else _scenario_from_row(row)

    def list_scenarios(self, *, limit: int = 50, test: bool, starting_after: str | None = None) -> list[ScenarioRecord]:
        rows = self._newest_first("scenarios", _SCENARIO_COLUMNS, limit, starting_after, ("test = ?", int(test)))
        return [_scenario_from_row(row) for row in rows]

    def delete_scenario(self, scenario_id: str) -> bool:
        with self._db:
            return self._db.execute("DELETE FROM scenarios WHERE id = ?", (scenario_id,)).rowcount > 0

    def delete_recording(self, rec_id: str) -> bool:
        with self._db:
            return self._db.execute("DELETE FROM recordings WHERE id = ?", (rec_id,)).rowcount > 0

    def open_calls(self) -> list[CallRecord]:
        """Calls never closed out, oldest first: at start-up these were cut off by a crash, and the
        caller records how they ended."""
        rows = self._db.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE ended_at IS NULL ORDER BY created_at, id")
        return self._with_legs([_call_from_row(row) for row in rows])

    def _with_legs(self, calls: list[CallRecord]) -> list[CallRecord]:
        by_id = {call.id: call for call in calls}
        ids = list(by_id)
        for start in range(0, len(ids), _MAX_PARAMS):
            chunk = ids[start : start + _MAX_PARAMS]
            rows = self._db.execute(
                f"SELECT {_LEG_COLUMNS} FROM call_legs WHERE call_id IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY call_id, idx",
                chunk,
            )
            for row in rows:
                by_id[row[0]].legs.append(_leg_from_row(row))
        return calls

    def tables(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]

    def _transaction(self, statements: Iterable[tuple[str, tuple]]) -> list[int]:
        """Run statements in one write transaction; their row counts."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            counts = [self._db.execute(sql, args).rowcount for sql, args in statements]
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return counts

    # -- API keys ----------------------------------------------------------------------------------
    def create_api_key(self, key: ApiKeyRecord, secret: ApiKeySecret) -> None:
        """Save a new key with its first secret, together (a key without a secret could never be used)."""
        self._transaction(
            [
                (
                    "INSERT INTO api_keys (id, name, scopes, test, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (key.id, key.name, json.dumps(key.scopes), int(key.test), key.created_at, key.revoked_at),
                ),
                _insert_secret(secret),
            ]
        )

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        row = self._db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys k WHERE k.id = ?", (key_id,)).fetchone()
        return None if row is None else _key_from_row(row)

    def list_api_keys(self, *, limit: int = 50, starting_after: str | None = None) -> list[ApiKeyRecord]:
        """Newest first (ids sort by creation time); the page after `starting_after` (an id) if given."""
        if starting_after is None:
            rows = self._db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys k ORDER BY k.id DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys k WHERE k.id < ? ORDER BY k.id DESC LIMIT ?",
                (starting_after, limit),
            )
        return [_key_from_row(row) for row in rows]

    def revoke_api_key(self, key_id: str, now: float) -> ApiKeyRecord | None:
        """Mark the key revoked (its first revocation time stays); None if there is no such key."""
        self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id))
        return self.get_api_key(key_id)

    def rotate_api_key(self, key_id: str, secret: ApiKeySecret, old_expires_at: float) -> None:
        """Make `secret` the key's current one; the others stop working at `old_expires_at` (or sooner if
        they were already due to), and secrets expired by `secret.created_at` are deleted."""
        self._transaction(
            [
                (
                    "DELETE FROM api_key_secrets WHERE key_id = ? AND expires_at IS NOT NULL AND expires_at <= ?",
                    (key_id, secret.created_at),
                ),
                (
                    "UPDATE api_key_secrets SET expires_at = ? WHERE key_id = ? "
                    "AND (expires_at IS NULL OR expires_at > ?)",
                    (old_expires_at, key_id, old_expires_at),
                ),
                _insert_secret(secret),
            ]
        )

    def api_key_secrets(self, prefix: str) -> list[tuple[ApiKeyRecord, ApiKeySecret]]:
        """The secrets whose lookup prefix is `prefix`, with their keys (revoked and expired included: the
        caller decides, with its clock)."""
        rows = self._db.execute(
            f"SELECT {_KEY_COLUMNS}, s.key_id, s.prefix, s.hash, s.created_at, s.expires_at "
            "FROM api_key_secrets s JOIN api_keys k ON k.id = s.key_id WHERE s.prefix = ?",
            (prefix,),
        )
        return [(_key_from_row(row[:8]), ApiKeySecret(*row[8:])) for row in rows]

    # -- idempotency keys --------------------------------------------------------------------------
    def claim_idempotency(
        self, api_key_id: str, key: str, fingerprint: str, now: float, *, lock_s: float, ttl_s: float
    ) -> IdempotencyRecord | None:
        """Atomically take `key` for a request about to execute: None when the caller now holds it (a
        `pending` row is written first, so a concurrent request with the same key finds it), else the row
        that is there. An expired row, or a pending one whose holder has not finished within `lock_s`
        (it crashed), is replaced."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "DELETE FROM idempotency_keys WHERE api_key_id = ? AND key = ? "
                "AND (expires_at <= ? OR (state = 'pending' AND locked_until <= ?))",
                (api_key_id, key, now, now),
            )
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO idempotency_keys (api_key_id, key, fingerprint, state, created_at, "
                "locked_until, expires_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                (api_key_id, key, fingerprint, now, now + lock_s, now + ttl_s),
            ).rowcount
            row = None
            if not inserted:
                row = self._db.execute(
                    f"SELECT {_IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE api_key_id = ? AND key = ?",
                    (api_key_id, key),
                ).fetchone()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return None if row is None else _idempotency_from_row(row)

    def finish_idempotency(
        self, api_key_id: str, key: str, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """Record the response of a claimed key, to be replayed until the row expires."""
        self._db.execute(
            "UPDATE idempotency_keys SET state = 'done', status = ?, headers = ?, body = ? "
            "WHERE api_key_id = ? AND key = ?",
            (status, json.dumps(headers), body, api_key_id, key),
        )

    def release_idempotency(self, api_key_id: str, key: str) -> None:
        """Give up a claimed key without a response to keep (the request was refused before it executed)."""
        self._db.execute(
            "DELETE FROM idempotency_keys WHERE api_key_id = ? AND key = ? AND state = 'pending'", (api_key_id, key)
        )

    def get_idempotency(self, api_key_id: str, key: str) -> IdempotencyRecord | None:
        row = self._db.execute(
            f"SELECT {_IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE api_key_id = ? AND key = ?",
            (api_key_id, key),
        ).fetchone()
        return None if row is None else _idempotency_from_row(row)

    def purge_idempotency(self, now: float) -> int:
        """Forget expired idempotency keys; returns how many."""
        return self._db.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,)).rowcount

    # -- webhooks --------------------------------------------------------------------------------------
    def add_webhook_endpoint(self, ep: WebhookEndpoint) -> None:
        self.webhook_endpoints_version += 1
        with self._db:
            self._db.execute(
                f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ep.id,
                    ep.url,
                    json.dumps(ep.events),
                    int(ep.enabled),
                    ep.description,
                    ep.secret,
                    ep.previous_secret,
                    ep.previous_expires_at,
                    int(ep.test),
                    ep.created_at,
                    ep.call_id,
                ),
            )

    def get_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = self._db.execute(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
        ).fetchone()
        return None if row is None else _endpoint_from_row(row)

    def list_webhook_endpoints(
        self, *, limit: int = 50, test: bool | None = None, starting_after: str | None = None
    ) -> list[WebhookEndpoint]:
        """Newest first (cursor pagination as list_calls); calls' own status callbacks are not listed."""
        rows = self._newest_first(
            "webhook_endpoints",
            _ENDPOINT_COLUMNS,
            limit,
            starting_after,
            ("test = ?", None if test is None else int(test)),
            ("coalesce(call_id, '') = ?", ""),
        )
        return [_endpoint_from_row(row) for row in rows]

    def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: list[str] | None = None,
        enabled: bool | None = None,
        description: str | None = None,
    ) -> WebhookEndpoint | None:
        """Change the given fields (None leaves one as is); the endpoint after, None if there is none."""
        sets, args = _filters(
            ("url = ?", url),
            ("events = ?", None if events is None else json.dumps(events)),
            ("enabled = ?", None if enabled is None else int(enabled)),
            ("description = ?", description),
        )
        if sets:
            self.webhook_endpoints_version += 1
            with self._db:
                self._db.execute(f"UPDATE webhook_endpoints SET {', '.join(sets)} WHERE id = ?", (*args, endpoint_id))
        return self.get_webhook_endpoint(endpoint_id)

    def rotate_webhook_secret(
        self, endpoint_id: str, secret: str, previous_expires_at: float
    ) -> WebhookEndpoint | None:
        """`secret` becomes the signing secret; the current one keeps signing too until `previous_expires_at`."""
        self.webhook_endpoints_version += 1
        with self._db:
            self._db.execute(
                "UPDATE webhook_endpoints SET previous_secret = secret, previous_expires_at = ?, secret = ? "
                "WHERE id = ?",
                (previous_expires_at, secret, endpoint_id),
            )
        return self.get_webhook_endpoint(endpoint_id)

    def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        """Delete the endpoint with its deliveries and their attempts (events other endpoints share stay)."""
        sub = "SELECT id FROM webhook_deliveries WHERE endpoint_id = ?"
        self.webhook_endpoints_version += 1
        counts = self._transaction(
            [
                (f"DELETE FROM webhook_attempts WHERE delivery_id IN ({sub})", (endpoint_id,)),
                ("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,)),
                ("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,)),
            ]
        )
        return counts[-1] > 0

    def has_enabled_webhook_endpoints(self) -> bool:
        """Whether any account-wide endpoint is enabled (calls' own status callbacks left out)."""
        return (
            self._db.execute("SELECT 1 FROM webhook_endpoints WHERE enabled = 1 AND call_id IS NULL LIMIT 1").fetchone()
            is not None
        )

    def call_webhook_endpoints(self, call_id: str) -> list[WebhookEndpoint]:
        """The status callback(s) of a call."""
        rows = self._db.execute(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE call_id = ? ORDER BY id", (call_id,)
        )
        return [_endpoint_from_row(row) for row in rows]

    def open_calls_with_callbacks(self) -> list[str]:
        """Calls not yet closed out that have a status callback."""
        rows = self._db.execute(
            "SELECT DISTINCT w.call_id FROM webhook_endpoints w JOIN calls c ON c.id = w.call_id "
            "WHERE c.ended_at IS NULL"
        )
        return [row[0] for row in rows]

    def setting(self, name: str, make: Callable[[], str]) -> str:
        """A setting of the softswitch's own, made with `make()` the first time it is asked for."""
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", (name, make()))
            return self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()[0]

    def rotate_key_webhook_secret(self, key_id: str, secret: str, previous_expires_at: float) -> bool:
        """`secret` becomes the key's webhook secret. The status callbacks signed with the current one (calls
        placed before, their deliveries still pending or retried) sign with both until `previous_expires_at`.
        False when there is no such key."""
        self.webhook_endpoints_version += 1
        self._db.execute("BEGIN IMMEDIATE")  # the key and its calls' callbacks change together, or neither
        try:
            row = self._db.execute("SELECT webhook_secret FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is not None:
                self._db.execute("UPDATE api_keys SET webhook_secret = ? WHERE id = ?", (secret, key_id))
            if row is not None and row[0]:
                self._db.execute(
                    "UPDATE webhook_endpoints SET previous_secret = secret, previous_expires_at = ?, secret = ? "
                    "WHERE call_id IS NOT NULL AND secret = ?",
                    (previous_expires_at, secret, row[0]),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return row is not None

    def key_webhook_secret(self, key_id: str, new: Callable[[], str]) -> str:
        """The secret signing the status callbacks of calls the key places, made with `new()` the first time."""
        with self._db:
            self._db.execute(
                "UPDATE api_keys SET webhook_secret = ? WHERE id = ? AND webhook_secret IS NULL", (new(), key_id)
            )
            row = self._db.execute("SELECT webhook_secret FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise KeyError(key_id)
        return row[0]

    def enqueue_webhook_event(
        self, event: WebhookEvent, *, test: bool, delivery_id: Callable[[], str]
    ) -> list[tuple[str, str]]:
        """Write the event and a pending delivery for every enabled endpoint that wants its type (those of
        test or live keys, as `test`, and the call's own status callback) in one transaction, so an event is
        never half-queued; nothing is written when no endpoint wants it. Returns the new deliveries' ids
        (from `delivery_id()`) with their endpoints' ids."""
        return self.enqueue_webhook_events([(event, test)], delivery_id=delivery_id)[0]

    def enqueue_webhook_events(
        self, events: Iterable[tuple[WebhookEvent, bool]], *, delivery_id: Callable[[], str]
    ) -> list[list[tuple[str, str]]]:
        """`enqueue_webhook_event` for many (event, test) pairs in one transaction (one commit: the group
        commit of a busy switch's events); the deliveries of each event, in order."""
        out: list[list[tuple[str, str]]] = []
        events_rows: list[tuple] = []
        delivery_rows: list[tuple] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for event, test in events:
                rows = self._db.execute(
                    f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE enabled = 1 "
                    "AND ((call_id IS NULL AND test = ?) OR call_id = ?) ORDER BY id",
                    (int(test), event.call_id),
                ).fetchall()
                targets = [ep.id for ep in map(_endpoint_from_row, rows) if ep.wants(event.type)]
                queued = [(delivery_id(), ep_id) for ep_id in targets]
                out.append(queued)
                if queued:
                    t = event.created_at
                    events_rows.append((event.id, event.type, event.call_id, event.payload, t))
                    delivery_rows += [(i, ep_id, event.id, event.call_id, t, t, t) for i, ep_id in queued]
            self._db.executemany(
                "INSERT INTO webhook_events (id, type, call_id, payload, created_at) VALUES (?, ?, ?, ?, ?)",
                events_rows,
            )
            self._db.executemany(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, call_id, status, attempt, "
                "next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                delivery_rows,
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return out

    def get_webhook_event(self, event_id: str) -> WebhookEvent | None:
        row = self._db.execute(
            "SELECT id, type, call_id, payload, created_at FROM webhook_events WHERE id = ?", (event_id,)
        ).fetchone()
        return None if row is None else WebhookEvent(row[0], row[1], row[2], bytes(row[3]), row[4])

    def webhook_chain_heads(self, limit: int) -> list[WebhookDelivery]:
        """Pending deliveries to enabled endpoints that head their chain: no earlier delivery of the same call
        to the same endpoint is pending (a call's events arrive in order). Soonest due first."""
        rows = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM {_DELIVERY_FROM} JOIN webhook_endpoints w ON w.id = d.endpoint_id "
            "WHERE d.status = 'pending' AND w.enabled = 1 AND NOT EXISTS ("
            "  SELECT 1 FROM webhook_deliveries p WHERE p.status = 'pending' AND p.endpoint_id = d.endpoint_id"
            "  AND p.call_id = d.call_id AND p.id < d.id) "
            "ORDER BY d.next_attempt_at, d.id LIMIT ?",
            (limit,),
        ).fetchall()
        return [WebhookDelivery(*row) for row in rows]

    def next_webhook_in_chain(self, endpoint_id: str, call_id: str, after_id: str) -> WebhookDelivery | None:
        """The call's next pending delivery to the endpoint after `after_id` (by the order index)."""
        row = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM {_DELIVERY_FROM} WHERE d.endpoint_id = ? AND d.call_id = ? "
            "AND d.status = 'pending' AND d.id > ? ORDER BY d.id LIMIT 1",
            (endpoint_id, call_id, after_id),
        ).fetchone()
        return None if row is None else WebhookDelivery(*row)

    def count_pending_webhook_deliveries(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'").fetchone()[0]

    def get_webhook_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        row = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM {_DELIVERY_FROM} WHERE d.id = ?", (delivery_id,)
        ).fetchone()
        return None if row is None else WebhookDelivery(*row)

    def webhook_delivery_to_send(self, delivery_id: str) -> tuple[WebhookDelivery, WebhookEvent] | None:
        """A delivery with its event (the body to POST) in one read: what each attempt starts with."""
        row = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS}, e.payload, e.created_at FROM {_DELIVERY_FROM} WHERE d.id = ?", (delivery_id,)
        ).fetchone()
        if row is None:
            return None
        d = WebhookDelivery(*row[:-2])
        return d, WebhookEvent(d.event_id, d.event_type, d.call_id, bytes(row[-2]), row[-1])

    def list_webhook_deliveries(
        self, endpoint_id: str, *, limit: int = 50, starting_after: str | None = None
    ) -> list[WebhookDelivery]:
        """An endpoint's deliveries, newest first."""
        args: list = [endpoint_id]
        where = "d.endpoint_id = ?"
        if starting_after is not None:
            where += " AND (d.created_at, d.id) < (SELECT created_at, id FROM webhook_deliveries WHERE id = ?)"
            args.append(starting_after)
        rows = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM {_DELIVERY_FROM} WHERE {where} "
            "ORDER BY d.created_at DESC, d.id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [WebhookDelivery(*row) for row in rows]

    def webhook_attempts(self, delivery_id: str) -> list[WebhookAttempt]:
        rows = self._db.execute(
            "SELECT delivery_id, attempt, at, status_code, latency_ms, error FROM webhook_attempts "
            "WHERE delivery_id = ? ORDER BY attempt",
            (delivery_id,),
        )
        return [WebhookAttempt(*row) for row in rows]

    def record_webhook_attempts(self, done: Iterable[tuple[WebhookAttempt, str, float]]) -> None:
        """Log attempts and move their deliveries on, each to its (status, next_attempt_at): pending again,
        delivered or failed. All in one transaction: an attempt's row and its delivery's status move together
        (a crash between the two could otherwise send an attempt twice without logging it), and the attempts
        that ended in one loop turn cost one commit (a group commit). A delivery deleted meanwhile (with its
        endpoint) is skipped rather than failing the others."""
        done = list(done)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, latency_ms, error) "
                "SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = ?1)",
                [(a.delivery_id, a.attempt, a.at, a.status_code, a.latency_ms, a.error) for a, _, _ in done],
            )
            self._db.executemany(
                "UPDATE webhook_deliveries SET status = ?, attempt = ?, next_attempt_at = ?, last_status_code = ?, "
                "last_error = ?, last_latency_ms = ?, updated_at = ? WHERE id = ?",
                [(st, a.attempt, at, a.status_code, a.error, a.latency_ms, a.at, a.delivery_id) for a, st, at in done],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def redeliver_webhook(self, delivery_id: str, now: float) -> WebhookDelivery | None:
        """Queue a delivery again (whatever its status) to be attempted at once, with the same event id."""
        with self._db:
            self._db.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (now, now, delivery_id),
            )
        return self.get_webhook_delivery(delivery_id)


def _insert_secret(secret: ApiKeySecret) -> tuple[str, tuple]:
    return (
        "INSERT INTO api_key_secrets (key_id, prefix, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        (secret.key_id, secret.prefix, secret.hash, secret.created_at, secret.expires_at),
    )
