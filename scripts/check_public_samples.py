"""Normalize the public third-party sample records (../shared/reference/samples) and report problems.

They are not copied into this repository (their licences differ), so this is a developer check,
run by hand where the reference folder exists: `.venv/bin/python scripts/check_public_samples.py` .
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bot.model import Event
from bot.sources.normalize import detect_kind, normalize

PUBLIC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"


def main() -> int:
    files = {
        "graph_signin_beta_failed_50126.json": "entra-signin",
        "graph_signin_beta_noninteractive_graph_explorer.json": "entra-signin",
        "graph_riskdetections_v1_example.json": "entra-risk",
        "o365_mgmt_api_content_blob_msdocs.json": "o365-audit",
        "o365_exchange_app_item_access_elastic.json": "o365-audit",
        "o365_azuread_userloggedin_elastic.jsonl": "o365-audit",
        "o365_exchange_and_aad_sekoia.jsonl": "o365-audit",
        "gws_reports_login_elastic.jsonl": "gws-activity",
        "gws_reports_token_authorize_gmail_elastic.jsonl": "gws-activity",
        "gws_reports_token_authorize_sekoia.json": "gws-activity",
        "gws_alertcenter_alerts_elastic.jsonl": "gws-alert",
    }
    seen = bad = 0
    for name, kind in files.items():
        text = (PUBLIC / name).read_text()
        records = (
            [json.loads(line) for line in text.splitlines() if line.strip()]
            if name.endswith(".jsonl")
            else [json.loads(text)]
        )
        for record in records:
            if detect_kind(record) != kind:
                print(f"{name}: detected as {detect_kind(record)}, expected {kind}")
                bad += 1
            out = normalize(kind, record, "t1")
            if not out or not all(isinstance(e, Event) for e in out):
                print(f"{name}: {out}")
                bad += 1
            seen += 1
    print(f"{seen} public sample records, {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
