from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import load_settings, missing_for_run, redacted
from bot.detection import detection_params
from bot.errors import ConfigError


def test_defaults_need_nothing() -> None:
    s = load_settings({})
    assert s.database_url.startswith("sqlite")
    assert s.slack_mode == "socket"


def test_env_overrides_toml(tmp_path: Path) -> None:
    f = tmp_path / "mw.toml"
    f.write_text('[mailwarden]\npoll_interval_s = 120\nsoc_channel = "C1"\n')
    s = load_settings({"MAILWARDEN_POLL_INTERVAL_S": "30"}, toml_path=f)
    assert s.poll_interval_s == 30 and s.soc_channel == "C1"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            {
                "MAILWARDEN_HTTP_PORT": "not-a-port",
                "MAILWARDEN_SLACK_MODE": "carrier-pigeon",
                "MAILWARDEN_POLL_INTERVAL_S": "1",
                "MAILWARDEN_NO_SUCH_KEY": "x",
            }
        )
    text = str(err.value)
    for name in (
        "MAILWARDEN_HTTP_PORT",
        "MAILWARDEN_SLACK_MODE",
        "MAILWARDEN_POLL_INTERVAL_S",
        "MAILWARDEN_NO_SUCH_KEY",
    ):
        assert name in text
    assert len(err.value.problems) == 4


def test_invalid_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"MAILWARDEN_HTTP_PORT": "xoxb-secret-token-typed-here"})
    assert "xoxb-secret" not in str(err.value)


def test_missing_credentials_named_per_mode() -> None:
    need = missing_for_run(load_settings({"MAILWARDEN_SLACK_MODE": "http"}))
    joined = "\n".join(need)
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SOC_CHANNEL",
        "SOC_USERGROUP",
        "MS_TENANT_ID",
        "MS_CLIENT_ID",
        "MS_CLIENT_SECRET",
    ):
        assert f"MAILWARDEN_{name}" in joined
    assert "SLACK_APP_TOKEN" not in joined
    socket = "\n".join(missing_for_run(load_settings({})))
    assert "MAILWARDEN_SLACK_APP_TOKEN" in socket


def test_secrets_never_printed(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILWARDEN_SLACK_BOT_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("MAILWARDEN_MS_CLIENT_SECRET", "graph-secret-value")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "xoxb-very-secret" not in out and "graph-secret-value" not in out
    shown = json.loads(out)
    assert shown["slack_bot_token"] == "**********" and shown["slack_app_token"] is None
    s = load_settings({"MAILWARDEN_SLACK_BOT_TOKEN": "xoxb-very-secret"})
    assert "xoxb-very-secret" not in repr(s) and "xoxb-very-secret" not in str(redacted(s))


def test_run_fails_fast_naming_each_missing_credential(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("MAILWARDEN_"):
            monkeypatch.delenv(key)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "MAILWARDEN_SLACK_BOT_TOKEN: missing" in err and "MAILWARDEN_MS_TENANT_ID: missing" in err


def test_gc_tuning_is_reversible() -> None:
    import gc

    from bot.runtime import GEN0_THRESHOLD, tune_gc, untune_gc

    before = gc.get_threshold()
    replaced = tune_gc()
    try:
        assert replaced == before and gc.get_threshold()[0] == GEN0_THRESHOLD and gc.get_freeze_count() > 0
    finally:
        untune_gc(replaced)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_own_networks_are_read_and_a_bad_one_is_named_by_position() -> None:
    settings = load_settings({"MAILWARDEN_OWN_NETWORKS": "44.206.19.32/29, 2001:db8::/48,192.0.2.7"})
    nets = detection_params(settings).own_networks
    assert [str(n) for n in nets] == ["44.206.19.32/29", "2001:db8::/48", "192.0.2.7/32"]
    with pytest.raises(ConfigError) as err:
        detection_params(load_settings({"MAILWARDEN_OWN_NETWORKS": "10.0.0.0/8,xoxb-not-a-network"}))
    assert "entry 2" in str(err.value) and "xoxb" not in str(err.value)
