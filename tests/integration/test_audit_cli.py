"""`mailwarden audit verify` names the first bad entry when the log is altered, deleted or reordered."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bot.cli import main
from sandbox import demo

TRIGGERS = ("DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete")


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    path = tmp_path_factory.mktemp("audit") / "demo.db"
    report = asyncio.run(demo.run_demo(db_path=str(path), stories=["user-denies-soc-contains"]))
    assert report["ok"]
    return path


@pytest.fixture
def copy(demo_db: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.db"
    src = sqlite3.connect(demo_db)
    dst = sqlite3.connect(target)
    src.backup(dst)
    src.close()
    dst.close()
    return target


def tamper(path: Path, *sql: str) -> None:
    con = sqlite3.connect(path)
    for stmt in (*TRIGGERS, *sql):  # an attacker with file access can drop our triggers first
        con.execute(stmt)
    con.commit()
    con.close()


def test_intact_log_verifies(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", str(copy)]) == 0
    assert "chain intact" in capsys.readouterr().out


def test_database_refuses_edits_without_dropping_triggers(copy: Path) -> None:
    con = sqlite3.connect(copy)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM audit_log WHERE seq = 3")
    con.close()


@pytest.mark.parametrize(
    ("sql", "bad"),
    [
        (["UPDATE audit_log SET actor = 'U0MALLORY' WHERE seq = 5"], 5),
        (['UPDATE audit_log SET detail = \'{"state":"closed_benign"}\' WHERE seq = 7'], 7),
        (["DELETE FROM audit_log WHERE seq = 4"], 4),
        (
            [
                "UPDATE audit_log SET seq = -1 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = 4",
                "UPDATE audit_log SET seq = 4 WHERE seq = -1",
            ],
            3,
        ),
    ],
)
def test_tampering_is_named(copy: Path, sql: list[str], bad: int, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(copy, *sql)
    assert main(["audit", "verify", "--db", str(copy)]) == 1
    assert f"first bad entry {bad}" in capsys.readouterr().err


def test_dropping_the_newest_entries_is_caught(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    con = sqlite3.connect(copy)
    (last,) = con.execute("SELECT max(seq) FROM audit_log").fetchone()
    con.close()
    tamper(copy, f"DELETE FROM audit_log WHERE seq >= {last - 1}")
    assert main(["audit", "verify", "--db", str(copy)]) == 1
    assert "head" in capsys.readouterr().err


def test_export_writes_jsonl(copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--db", str(copy), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    assert {"seq", "at", "actor", "action", "case_id", "detail", "prev_hash", "hash"} <= set(lines[0])
    assert any(e["action"] == "action.succeeded" for e in lines)
