"""Persistence of a fleet monitor: one SQLite file (through aiosqlite).

Three tables:

- ``sims``: one row per tracked eSIM: its last reading, speed estimates, what already fired for
  its package, and its schedule (times as wall-clock POSIX seconds, so they survive a restart);
- ``events``: every event emitted, in order (an audit log; nothing is re-emitted from it);
- ``meta``: the fleet prior and the format version.

Readings are written behind: the monitor hands over a batch of changed rows now and then (every
cache TTL, after many readings, or soon after an event), and SQLite works in its own thread, so
it is never on the path of a read.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from ..models.usage import Usage

__all__ = ["SqliteStore", "StoreError", "StoredEvent", "StoredSim", "encode_sim"]

_FORMAT = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sims (iccid TEXT PRIMARY KEY, state BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "iccid TEXT NOT NULL, kind TEXT NOT NULL, threshold REAL, detected_at REAL NOT NULL, "
    "usage BLOB)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB)",
)


class StoredSim(msgspec.Struct, array_like=True, gc=False):
    """One ``sims`` row. Times are wall-clock POSIX seconds (``None``: never)."""

    usage: Usage | None = None
    read_at: float | None = None
    eligible_at: float | None = None
    due: float | None = None
    rate: float = 0.0
    peak: float = 0.0
    moves: int = 0
    fails: int = 0
    fired: int = 0
    missing: bool = False
    urgent: bool = False
    still: float = 0.0
    share: float = 0.0
    root: float = 0.0
    since: float | None = None
    top: float = 0.0
    #: Bounds on the eSIM's known burst speed, MB/s (0: none; rows of older stores lack them).
    known_low: float = 0.0
    known_high: float = 0.0


class StoredEvent(msgspec.Struct, array_like=True, gc=False):
    """One ``events`` row."""

    iccid: str
    kind: str
    threshold: float | None
    detected_at: float
    usage: Usage | None


_encode = msgspec.msgpack.Encoder().encode
_decode_sim = msgspec.msgpack.Decoder(StoredSim).decode
_decode_any = msgspec.msgpack.Decoder().decode


class StoreError(sqlite3.DatabaseError):
    """The file is not a fleet monitor's store, or was written by a newer version of it."""


class SqliteStore:
    """The SQLite file behind ``FleetMonitor(..., store="fleet.db")``.

    With ``read_only=True`` (``esim-async monitor status``) the file is only read: nothing is
    created in it, and an empty file reads as an empty store.
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = os.fspath(path)
        self.read_only = read_only
        self._db: Any = None
        self._empty = False

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def open(self) -> None:
        """Open (and create) the file; idempotent."""
        if self._db is not None:
            return
        import aiosqlite

        target, uri = self._target()
        db = await aiosqlite.connect(target, uri=uri)
        try:
            async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
                tables = {name for (name,) in await cur.fetchall()}
            if tables and not {"sims", "meta"} <= tables:
                raise StoreError(f"{self.path} is a database but not a fleet monitor's store")
            if tables:
                await self._check_format(db)
            if self.read_only:
                self._empty = not tables
            else:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    await db.execute(statement)
                await db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?)",
                    (_encode(_FORMAT),),
                )
                await db.commit()
        except BaseException:
            await db.close()
            raise
        self._db = db

    def _target(self) -> tuple[str, bool]:
        """What to connect to (a ``mode=ro`` URI when read-only), and whether it is a URI."""
        absolute = os.path.abspath(self.path)
        folder = os.path.dirname(absolute)
        if not os.path.isdir(folder):
            raise StoreError(f"{self.path}: no such directory {folder!r}")
        if self.read_only:
            return "file:" + urllib.parse.quote(absolute) + "?mode=ro", True
        return self.path, False

    async def _check_format(self, db: Any) -> None:
        async with db.execute("SELECT value FROM meta WHERE key = 'format'") as cursor:
            row = await cursor.fetchone()
        found: Any = _FORMAT
        if row is not None:
            try:
                found = _decode_any(row[0])
            except msgspec.DecodeError:
                found = None
        if not isinstance(found, int) or found > _FORMAT:
            raise StoreError(
                f"{self.path} was written by a newer version of esim_async, or is damaged "
                f"(store format {found!r}; this version reads {_FORMAT})"
            )

    def _opened(self) -> Any:
        assert self._db is not None, "open() first"
        return self._db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def load(self) -> tuple[list[tuple[str, StoredSim]], dict[str, Any]]:
        """Every stored eSIM and the meta values."""
        db = self._opened()
        if self._empty:
            return [], {}
        async with db.execute("SELECT iccid, state FROM sims") as cursor:
            rows = await cursor.fetchall()
        return [(iccid, _decode_sim(blob)) for iccid, blob in rows], await self.load_meta()

    async def load_meta(self) -> dict[str, Any]:
        """The meta values alone."""
        db = self._opened()
        if self._empty:
            return {}
        async with db.execute("SELECT key, value FROM meta") as cursor:
            return {key: _decode_any(value) for key, value in await cursor.fetchall()}

    async def add(self, rows: Iterable[tuple[str, StoredSim]]) -> None:
        """Insert eSIMs not stored yet (existing rows are kept)."""
        db = self._opened()
        await db.executemany(
            "INSERT OR IGNORE INTO sims (iccid, state) VALUES (?, ?)",
            [(iccid, _encode(row)) for iccid, row in rows],
        )
        await db.commit()

    async def remove(self, iccids: Iterable[str]) -> None:
        db = self._opened()
        await db.executemany("DELETE FROM sims WHERE iccid = ?", [(i,) for i in iccids])
        await db.commit()

    async def save(
        self,
        rows: Sequence[tuple[str, bytes]],
        events: Sequence[StoredEvent],
        meta: dict[str, Any],
    ) -> None:
        """Write a batch in one transaction: changed eSIMs (encoded with :func:`encode_sim`),
        new events and meta values. Rows of eSIMs no longer stored are not re-created. A
        batch that fails is rolled back whole, so it can be given again without writing its
        events twice."""
        db = self._opened()
        try:
            if rows:
                await db.executemany(
                    "UPDATE sims SET state = ? WHERE iccid = ?", [(blob, i) for i, blob in rows]
                )
            if events:
                await db.executemany(
                    "INSERT INTO events (iccid, kind, threshold, detected_at, usage) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            e.iccid,
                            e.kind,
                            e.threshold,
                            e.detected_at,
                            _encode(e.usage) if e.usage is not None else None,
                        )
                        for e in events
                    ],
                )
            if meta:
                await db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [(k, _encode(v)) for k, v in meta.items()],
                )
            await db.commit()
        except Exception:
            with contextlib.suppress(Exception):
                await db.rollback()
            raise

    async def events(self) -> list[StoredEvent]:
        """Every event stored, oldest first."""
        db = self._opened()
        if self._empty:
            return []
        decode_usage = msgspec.msgpack.Decoder(Usage).decode
        async with db.execute(
            "SELECT iccid, kind, threshold, detected_at, usage FROM events ORDER BY id"
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            StoredEvent(i, k, t, d, decode_usage(u) if u is not None else None)
            for i, k, t, d, u in rows
        ]


def encode_sim(row: StoredSim) -> bytes:
    """``row`` as stored in the ``sims`` table."""
    return _encode(row)
