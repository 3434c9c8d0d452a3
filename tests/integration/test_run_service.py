"""`mailwarden run` starts the real service (HTTP mode), serves health and metrics, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_serves_health_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAILWARDEN_")},
        "MAILWARDEN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'run.db'}",
        "MAILWARDEN_SLACK_MODE": "http",
        "MAILWARDEN_SLACK_BOT_TOKEN": "xoxb-test",
        "MAILWARDEN_SLACK_SIGNING_SECRET": "test-secret",
        "MAILWARDEN_SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/",  # nobody there: calls fail, logged
        "MAILWARDEN_SOC_CHANNEL": "C1",
        "MAILWARDEN_SOC_USERGROUP": "S1",
        "MAILWARDEN_MS_TENANT_ID": "00000000-0000-0000-0000-000000000001",
        "MAILWARDEN_MS_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
        "MAILWARDEN_MS_CLIENT_SECRET": "not-a-real-secret",
        "MAILWARDEN_HTTP_HOST": "127.0.0.1",
        "MAILWARDEN_HTTP_PORT": str(port),
        "MAILWARDEN_POLL_INTERVAL_S": "3600",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        health = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert health.status_code == 200 and health.json()["db"] == "ok" and health.json()["audit_ok"] is True
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        assert metrics.status_code == 200
        assert {"mailwarden_db_ok 1.0", "mailwarden_audit_chain_ok 1.0"} <= set(metrics.text.splitlines())
        forged = httpx.post(
            f"http://127.0.0.1:{port}/slack/events",
            content=b"payload=%7B%7D",
            headers={
                "X-Slack-Request-Timestamp": str(int(time.time())),
                "X-Slack-Signature": "v0=" + "0" * 64,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            timeout=5,
        )
        assert forged.status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        _, err = proc.communicate()
        assert "not-a-real-secret" not in err and "xoxb-test" not in err  # secrets never reach the logs
    finally:
        if proc.poll() is None:
            proc.kill()
