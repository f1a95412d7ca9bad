"""The study database: shown pairs, votes and registered method folders in one SQLite file.

Every write is its own committed transaction in WAL mode with ``synchronous=FULL``, so a vote
acknowledged to the browser survives the server being killed (or the machine losing power).
Each call opens its own short-lived connection, which keeps the class safe to share between
the web server's worker threads.

A file that holds other tables than the study's is refused, never converted: gknet does not
touch another program's database. ``readonly=True`` (reports) opens the file read-only.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gknet.errors import GknetError

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    session TEXT NOT NULL,
    image TEXT NOT NULL,
    left_method TEXT NOT NULL,
    right_method TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    session TEXT NOT NULL,
    image TEXT NOT NULL,
    left_method TEXT NOT NULL,
    right_method TEXT NOT NULL,
    winner TEXT NOT NULL,
    pair_id TEXT UNIQUE REFERENCES pairs(id)
);
CREATE TABLE IF NOT EXISTS methods (
    name TEXT PRIMARY KEY,
    dir TEXT NOT NULL,
    added TEXT NOT NULL
);
"""
# Table -> columns, as SCHEMA creates them.
COLUMNS = {
    "pairs": {"id", "time", "session", "image", "left_method", "right_method"},
    "votes": {"id", "time", "session", "image", "left_method", "right_method", "winner", "pair_id"},
    "methods": {"name", "dir", "added"},
}
METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")
PAIR_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as add_pair makes them


class VoteError(GknetError):
    """A vote that cannot be recorded.

    ``reason``: "invalid", "unknown_pair", "other_session" or "duplicate".
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Pair:
    id: str
    session: str
    image: str
    left: str
    right: str


@dataclass(frozen=True)
class Vote:
    time: str
    session: str
    image: str
    left: str
    right: str
    winner: str

    @property
    def loser(self) -> str:
        return self.right if self.winner == self.left else self.left


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_method_name(name: str) -> str:
    if not METHOD_NAME.match(name):
        raise GknetError(
            f"invalid method name {name!r}: use 1-40 letters, digits, '_', '-', '.' or '+', "
            "starting with a letter or digit"
        )
    return name


class StudyDB:
    """Votes of the pairwise user study, stored in the SQLite file ``path`` (created if missing)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path, self.readonly = Path(path), readonly
        if self.path.is_dir():
            raise GknetError(f"database path is a directory: {self.path}")
        if readonly and not self.path.is_file():
            raise GknetError(f"study database not found: {self.path}")
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                self._check_tables(conn)
                if not readonly:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise GknetError(f"cannot use {self.path} as the study database: {exc}") from None
        except OSError as exc:
            raise GknetError(f"cannot create the study database {self.path}: {exc.strerror or exc}") from None

    def _check_tables(self, conn: sqlite3.Connection) -> None:
        """GknetError unless the file is empty or a study database (read-only: a complete one)."""
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        tables = [name for (name,) in conn.execute(query).fetchall()]
        for name in tables:
            columns = {c for (c,) in conn.execute("SELECT name FROM pragma_table_info(?)", (name,))}
            if name not in COLUMNS or not COLUMNS[name] <= columns:
                raise GknetError(
                    f"{self.path} is not a gknet studio database (its table {name[:40]!r} is not the "
                    "study's); gknet leaves other programs' databases alone"
                )
        if self.readonly and "votes" not in tables:
            raise GknetError(f"{self.path} holds no study (no votes table)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:  # mode=ro: SQLite itself refuses every write
            target, uri = f"{self.path.resolve().as_uri()}?mode=ro", True
        else:
            target, uri = str(self.path), False
        with closing(sqlite3.connect(target, timeout=30, uri=uri)) as conn:
            conn.execute("PRAGMA synchronous=FULL")
            with conn:  # one transaction, committed on success
                yield conn

    def add_pair(self, session: str, image: str, left: str, right: str) -> Pair:
        """Record a pair shown to ``session`` and return it with a fresh id."""
        pair = Pair(uuid.uuid4().hex, session, image, left, right)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO pairs (id, time, session, image, left_method, right_method)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (pair.id, _now(), session, image, left, right),
            )
        return pair

    def get_pair(self, pair_id: str) -> Pair | None:
        if not isinstance(pair_id, str) or not PAIR_ID.fullmatch(pair_id):
            return None  # not one of our ids (and never handed to SQLite: it may not even encode)
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, session, image, left_method, right_method FROM pairs WHERE id = ?", (pair_id,)
            ).fetchone()
        return Pair(*row) if row else None

    def add_vote(self, pair_id: str, session: str, choice: str) -> Vote:
        """Store the vote of ``session`` for the ``choice`` ("left" or "right") side of a shown pair."""
        if choice not in ("left", "right"):
            raise VoteError(f"choice must be 'left' or 'right', got {choice[:20]!r}", "invalid")
        pair = self.get_pair(pair_id)
        if pair is None:
            raise VoteError("unknown pair: vote on a pair_id from /api/study/pair", "unknown_pair")
        if pair.session != session:
            raise VoteError("this pair was shown to another session", "other_session")
        winner = pair.left if choice == "left" else pair.right
        vote = Vote(_now(), session, pair.image, pair.left, pair.right, winner)
        try:
            with self._connect() as conn:
                conn.execute(
                    "INSERT INTO votes (time, session, image, left_method, right_method, winner, pair_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (vote.time, session, vote.image, vote.left, vote.right, vote.winner, pair_id),
                )
        except sqlite3.IntegrityError:
            raise VoteError("this pair has already been voted on", "duplicate") from None
        return vote

    def votes(self) -> list[Vote]:
        """All votes, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT time, session, image, left_method, right_method, winner FROM votes ORDER BY id"
            ).fetchall()
        return [Vote(*row) for row in rows]

    def count_votes(self, session: str | None = None) -> int:
        with self._connect() as conn:
            if session is None:
                return conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM votes WHERE session = ?", (session,)).fetchone()[0]

    def register_method(self, name: str, directory: str | Path) -> None:
        """Register (or re-point) a folder of result images named like the study composites."""
        check_method_name(name)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO methods (name, dir, added) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET dir = excluded.dir, added = excluded.added",
                (name, str(Path(directory).resolve()), _now()),
            )

    def registered_methods(self) -> dict[str, Path]:
        """Registered method name -> its folder, in registration order."""
        with self._connect() as conn:
            rows = conn.execute("SELECT name, dir FROM methods ORDER BY added, name").fetchall()
        return {name: Path(directory) for name, directory in rows}
