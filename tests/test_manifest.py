"""manifest.yml: valid against Slack's published schema, and asking for exactly the scopes the code uses.

The schema is a repo copy (tests/data/, MIT, Slack Technologies; see the .source.txt next to it) so the
test runs on a clean clone. The scope test walks the AST of bot/ and actions/ for every AsyncWebClient
method the code touches, maps each Slack Web API method to its scopes with the table below, and
compares the union with oauth_config.scopes.bot: a new call without a manifest change (or a scope left
behind after a call is removed) fails here rather than with `missing_scope` in production.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from slack_sdk.web.async_client import AsyncWebClient

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifest.yml"
SCHEMA = ROOT / "tests" / "data" / "slack-app-manifest.schema.json"
SCANNED = ("bot", "actions")

# Slack Web API method -> bot scopes it needs (https://docs.slack.dev/reference/methods/<method>).
# Where Slack accepts one of several scopes depending on the conversation type, the entry names the
# one for the conversation Mailwarden would use (a DM, or a public SOC channel); revisit it when a
# call is added for a different kind of conversation.
SCOPES: dict[str, frozenset[str]] = {
    # messages
    "chat.postMessage": frozenset({"chat:write"}),
    "chat.update": frozenset({"chat:write"}),
    "chat.postEphemeral": frozenset({"chat:write"}),
    "chat.delete": frozenset({"chat:write"}),
    "chat.meMessage": frozenset({"chat:write"}),
    "chat.scheduleMessage": frozenset({"chat:write"}),
    "chat.deleteScheduledMessage": frozenset({"chat:write"}),
    "chat.scheduledMessages.list": frozenset(),
    "chat.getPermalink": frozenset(),
    "chat.unfurl": frozenset({"links:write"}),
    # conversations
    "conversations.open": frozenset({"im:write"}),  # a 1:1 DM
    "conversations.info": frozenset({"channels:read"}),
    "conversations.list": frozenset({"channels:read"}),
    "conversations.members": frozenset({"channels:read"}),
    # read back only to find a post whose answer was lost (dispatch.py), in the SOC channel (public or
    # private) and in the app's own DMs
    "conversations.history": frozenset({"channels:history", "groups:history", "im:history"}),
    "conversations.replies": frozenset({"channels:history", "groups:history", "im:history"}),
    "conversations.join": frozenset({"channels:join"}),
    "conversations.invite": frozenset({"channels:manage"}),
    "conversations.create": frozenset({"channels:manage"}),
    "conversations.setTopic": frozenset({"channels:manage"}),
    "im.open": frozenset({"im:write"}),
    # users and user groups
    "users.info": frozenset({"users:read"}),
    "users.list": frozenset({"users:read"}),
    "users.getPresence": frozenset({"users:read"}),
    "users.lookupByEmail": frozenset({"users:read", "users:read.email"}),
    "users.conversations": frozenset({"channels:read"}),
    "users.profile.get": frozenset({"users.profile:read"}),
    "usergroups.list": frozenset({"usergroups:read"}),
    "usergroups.users.list": frozenset({"usergroups:read"}),
    "usergroups.users.update": frozenset({"usergroups:write"}),
    "usergroups.update": frozenset({"usergroups:write"}),
    "bots.info": frozenset({"users:read"}),
    "team.info": frozenset({"team:read"}),
    "dnd.info": frozenset({"dnd:read"}),
    # surfaces: views need only a trigger_id / an enabled Home tab, no scope
    "views.open": frozenset(),
    "views.push": frozenset(),
    "views.update": frozenset(),
    "views.publish": frozenset(),
    # reactions, pins, bookmarks, files
    "reactions.add": frozenset({"reactions:write"}),
    "reactions.remove": frozenset({"reactions:write"}),
    "reactions.get": frozenset({"reactions:read"}),
    "pins.add": frozenset({"pins:write"}),
    "pins.remove": frozenset({"pins:write"}),
    "bookmarks.add": frozenset({"bookmarks:write"}),
    "files.upload": frozenset({"files:write"}),
    "files.getUploadURLExternal": frozenset({"files:write"}),
    "files.completeUploadExternal": frozenset({"files:write"}),
    "files.upload.v2": frozenset({"files:write"}),  # slack_sdk's files_upload_v2 helper
    "files.info": frozenset({"files:read"}),
    "emoji.list": frozenset({"emoji:read"}),
    # token plumbing: auth.test needs no scope (bolt calls it); apps.connections.open uses the
    # app-level token's connections:write, which is not a bot scope
    "auth.test": frozenset(),
    "apps.connections.open": frozenset(),
}


def _load_manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "manifest.yml must be a YAML mapping"
    return data


def _load_schema() -> dict[str, Any]:
    data = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def _client_methods() -> dict[str, str]:
    """AsyncWebClient attribute name -> the Web API method it calls (read from slack_sdk's source)."""
    source = Path(inspect.getfile(AsyncWebClient)).read_text(encoding="utf-8")
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "AsyncWebClient")
    methods: dict[str, str] = {}
    for fn in cls.body:
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or fn.name.startswith("_"):
            continue
        api = fn.name.replace("_", ".")  # fallback: chat_postMessage -> chat.postMessage
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "api_call"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                api = node.args[0].value
                break
        methods[fn.name] = api
    # Only what really is a method of the client we build.
    return {name: api for name, api in methods.items() if callable(getattr(AsyncWebClient, name, None))}


def _used_api_methods() -> dict[str, list[str]]:
    """Web API method -> where bot/ and actions/ use it ("path:line").

    Counts any attribute named like an AsyncWebClient method (called, or passed on as a callable),
    plain `api_call("method", ...)`, and bolt's `say` utility (chat.postMessage) taken by a listener.
    """
    client = _client_methods()
    used: dict[str, list[str]] = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            where = path.relative_to(ROOT).as_posix()
            for node in ast.walk(tree):
                api: str | None = None
                if isinstance(node, ast.Attribute) and node.attr in client:
                    api = client[node.attr]
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "api_call"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    api = node.args[0].value
                elif isinstance(node, ast.arg) and node.arg == "say":
                    api = "chat.postMessage"
                if api is not None:
                    used.setdefault(api, []).append(f"{where}:{node.lineno}")
    return used


def test_manifest_is_valid_against_slacks_schema() -> None:
    schema = _load_schema()
    assert "$schema" in schema, "the schema copy must declare its draft so the right validator is used"
    validator_cls = jsonschema.validators.validator_for(schema)
    declared = schema["$schema"].rstrip("#")
    assert validator_cls.META_SCHEMA.get("$schema", validator_cls.META_SCHEMA.get("$id", "")).rstrip("#") == declared, (
        f"no jsonschema validator for {declared}"
    )
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(_load_manifest()), key=lambda e: list(e.absolute_path))
    assert not errors, "manifest.yml does not match Slack's schema:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_manifest_values_the_schema_cannot_check() -> None:
    m = _load_manifest()
    info = m["display_information"]
    # The schema spells this constraint "regex", which JSON Schema ignores.
    if "background_color" in info:
        assert re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", info["background_color"])
    assert info["name"] == "Mailwarden"
    assert m["features"]["bot_user"]["display_name"] == "mailwarden"
    settings = m["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    if not settings.get("socket_mode_enabled", False):
        # HTTP mode: Slack must know where to POST; the bot serves /slack/events.
        url = settings["interactivity"].get("request_url", "")
        assert url.startswith("https://") and url.endswith("/slack/events"), url


def test_schema_copy_names_its_source() -> None:
    assert (SCHEMA.parent / (SCHEMA.name + ".source.txt")).read_text().strip()


def test_scan_sees_the_slack_calls() -> None:
    """Guard against a scanner that silently finds nothing."""
    assert "chat.postMessage" in _used_api_methods()
    assert "chat_postMessage" in _client_methods()


def test_bot_scopes_are_exactly_what_the_code_needs() -> None:
    used = _used_api_methods()
    unknown = sorted(set(used) - set(SCOPES))
    assert not unknown, (
        "Slack Web API methods used in the code but missing from SCOPES in tests/test_manifest.py "
        "(add each with the scopes from https://docs.slack.dev/reference/methods/<method>, then update "
        "manifest.yml):\n" + "\n".join(f"  {api}: {', '.join(used[api])}" for api in unknown)
    )
    manifest = _load_manifest()
    scopes = dict(SCOPES)
    if manifest["features"].get("slash_commands"):
        # a slash command needs the commands scope whatever the code calls; the handler is bolt's app.command
        used = {**used, "(slash command)": ["manifest.yml features.slash_commands"]}
        scopes["(slash command)"] = frozenset({"commands"})
    needed = frozenset().union(*(scopes[api] for api in used))
    declared = manifest["oauth_config"]["scopes"]["bot"]
    assert len(declared) == len(set(declared)), f"duplicate bot scopes in manifest.yml: {declared}"
    why = {scope: sorted(api for api in used if scope in scopes[api]) for scope in needed}
    missing = sorted(needed - set(declared))
    extra = sorted(set(declared) - needed)
    assert not missing and not extra, (
        "manifest.yml oauth_config.scopes.bot differs from what the code needs:\n"
        + "".join(f"  missing {s} (for {', '.join(why[s])})\n" for s in missing)
        + "".join(f"  unused  {s} (no call in {'/, '.join(SCANNED)}/ needs it)\n" for s in extra)
    )


def test_manifest_declares_the_command_and_events_the_code_handles() -> None:
    from bot.slack.ids import COMMAND

    manifest = _load_manifest()
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == [COMMAND]
    source = "\n".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    handled = set(re.findall(r'app\.event\("([a-z_]+)"\)', source))
    assert handled, "the scan found no event listeners"
    assert handled == set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True  # views.publish needs it
