"""SQLite through aiosqlite with one thread hand-off per statement instead of three or four.

SQLAlchemy's aiosqlite adapter runs a statement as separate calls on aiosqlite's worker thread:
open a cursor, execute, fetch the rows, close the cursor. Each call is a round trip between the
event loop and that thread, and on a 2-vCPU VM one round trip costs about 90 µs of wake-ups
(measured: a bare `aiosqlite.Connection._execute` no-op 89 µs; `select 1` through SQLAlchemy 483 µs).
A poll's transaction runs a few dozen statements, so the hand-offs cost more than SQLite's own
work (reference/performance.md G1: "per-event DB round-trips").

Here the whole statement (cursor, execute, fetch, close) is one function run on the same worker
thread, so it is one round trip. The rows, description, rowcount and lastrowid come back with it.
Everything else (transactions, commit, rollback, server-side cursors, the pool) is SQLAlchemy's own
aiosqlite adapter; this module plugs in through `create_async_engine(module=...)`, the documented
way to hand a dialect its DBAPI. Like SQLAlchemy's adapter (its isolation-level setter queues a
function on `aiosqlite.Connection._tx` and reads `_conn`), it relies on aiosqlite's worker queue.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, list[Any] | None, int, int | None]


def _run_statement(driver: aiosqlite.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """On aiosqlite's worker thread: the statement from cursor to close, in one go."""
    cursor = driver._conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statements each cost one round trip to the driver's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # no aiosqlite cursor is opened here: opening one is a round trip of its own
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return  # nothing is open on the driver's side between statements

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: str, parameters: Any, many: bool) -> None:
        driver: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await driver._execute(  # type: ignore[no-untyped-call]
                _run_statement, driver, operation, parameters, many
            )
        description, rows, rowcount, lastrowid = outcome
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows) if rows else collections.deque()

    def nextset(self) -> None:
        return None  # sqlite3 runs one statement per execute

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor  # type: ignore[assignment]


class OneHopAiosqlite(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI adapter, handing out `OneHopConnection`s."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        stock = super().connect(*arg, **kw)
        return OneHopConnection(self, stock._connection)


def dbapi() -> OneHopAiosqlite:
    return OneHopAiosqlite(aiosqlite, sqlite3)
