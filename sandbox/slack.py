"""Loopback emulator of the Slack Web API and of Slack's interactivity deliveries (api-contracts §3)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sandbox.recorder import Faults, RecordedRequest, SlidingWindow, capture

MAX_BLOCKS = 50
MAX_BLOCKS_JSON = 13_200  # where Slack starts answering msg_blocks_too_long (api-contracts §3.1)
ACK_TIMEOUT_S = 3.0  # Slack gives up on an interactivity request after 3 seconds
_FIRST_TS = 1_780_000_000


class SlackError(Exception):
    def __init__(self, error: str, errors: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.errors = errors or []


@dataclass
class _TokenBucket:
    capacity: float
    per_second: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def take(self) -> int:
        """0 when a token was taken, else whole seconds (>= 1) until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0
        return max(1, math.ceil((1 - self.tokens) / self.per_second))


Method = Callable[[dict[str, Any]], dict[str, Any]]


class SlackEmulator:
    """Slack for one workspace with one bot installed.

    Set `base_url` to the URL LoopbackServer.start() returned: it is what `response_url`s point at. Left
    empty, it is learned from the first request the emulator receives.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-sandbox",
        signing_secret: str = "sandbox-signing-secret",
        team_id: str = "T0SANDBOX",
        enforce_limits: bool = True,
        time_scale: float = 1.0,
    ) -> None:
        # time_scale > 1 compresses Slack's limits (and the bot's pacing, set to the same factor) so a
        # benchmark of a 4-minute storm runs in seconds with the same ratios (performance.md §4).
        self.time_scale = time_scale
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.enforce_limits = enforce_limits
        self.bot_user_id = "UMAILWARDEN"
        self.bot_id = "BMAILWARDEN"
        self.app_id = "A0MAILWARDEN"
        self.base_url = ""
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.last_delivery: tuple[bytes, dict[str, str]] | None = None
        self._users: dict[str, dict[str, Any]] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._channels: dict[str, str] = {}  # id -> name, DMs included
        self._dm_users: dict[str, str] = {}  # DM id -> user id
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._hooks: dict[str, tuple[str, str, str]] = {}  # response_url token -> channel, ts, user
        self._seq = 0
        self._post_buckets: dict[str, _TokenBucket] = {}
        # Tier 3 and Tier 4, per method per workspace (api-contracts §3.3)
        self._windows = {
            "chat.update": SlidingWindow(50, 60.0 / time_scale),
            "chat.postEphemeral": SlidingWindow(100, 60.0 / time_scale),
        }
        self._methods: dict[str, Method] = {
            "auth.test": self._auth_test,
            "users.lookupByEmail": self._users_lookup_by_email,
            "users.info": self._users_info,
            "conversations.open": self._conversations_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "usergroups.users.list": self._usergroups_users_list,
            "views.open": self._views_open,
            "chat.getPermalink": self._chat_get_permalink,
            "views.publish": self._views_publish,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
        }
        self.views: dict[str, dict[str, Any]] = {}  # view id -> {"user", "view", "type"}
        self.homes: dict[str, dict[str, Any]] = {}  # user id -> published Home view
        self._triggers: dict[str, tuple[str, float]] = {}  # trigger_id -> (user, issued at, monotonic)
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["GET", "POST"]),
                Route("/response/{token}", self._response_url, methods=["POST"]),
            ]
        )

    # --- setup and assertions -------------------------------------------------------------------------

    def add_user(
        self,
        id: str,
        email: str,
        real_name: str,
        *,
        tz: str = "America/New_York",
        tz_label: str = "Eastern Standard Time",
        tz_offset: int = -18000,
        deleted: bool = False,
    ) -> None:
        self._users[id] = {
            "id": id,
            "team_id": self.team_id,
            "name": email.split("@")[0],
            "real_name": real_name,
            "deleted": deleted,
            "is_bot": False,
            "tz": tz,
            "tz_label": tz_label,
            "tz_offset": tz_offset,
            "profile": {"email": email, "real_name": real_name, "display_name": real_name},
        }

    def add_usergroup(self, id: str, handle: str, members: list[str]) -> None:
        self._usergroups[id] = list(members)

    def add_channel(self, id: str, name: str) -> None:
        self._channels[id] = name

    def dm_channel(self, user_id: str) -> str:
        dm = _dm_id(user_id)
        self._channels.setdefault(dm, "directmessage")
        self._dm_users[dm] = user_id
        return dm

    def calls(self, method: str) -> int:
        return sum(1 for r in self.requests if _method_of(r) == method and r.status == 200 and not r.error)

    def all_messages(self) -> list[dict[str, Any]]:
        """Every message in every conversation, in posting order within each."""
        return [copy.deepcopy(m) for stored in self._messages.values() for m in stored]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self._messages.get(self._existing_channel(channel) or channel, []))

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        return copy.deepcopy(self._find_message(self._existing_channel(channel) or channel, ts))

    # --- Web API ------------------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        rec = await capture(request)
        self.requests.append(rec)
        self.base_url = self.base_url or str(request.base_url).rstrip("/")
        response = self._dispatch(rec, request.path_params["method"])
        rec.status = response.status_code
        return response

    def _dispatch(self, rec: RecordedRequest, method: str) -> Response:
        fault = self.faults.take(method)
        if fault:
            retry_after = fault.retry_after
            if fault.status == 429:
                retry_after = retry_after or 1  # Slack's 429s always carry Retry-After
            default = "ratelimited" if fault.status == 429 else "fatal_error"
            if fault.after_effect:
                self._handle(rec, method)  # done, but the client hears only the failure
            return self._refuse(rec, fault.status, fault.error or default, retry_after)
        return self._handle(rec, method)

    def _handle(self, rec: RecordedRequest, method: str) -> Response:
        try:
            args = _parse_args(rec)
            self._authenticate(rec, args)
            handler = self._methods.get(method)
            if handler is None:
                raise SlackError("unknown_method")
            wait = self._admit(method, args)
            if wait:
                return self._refuse(rec, 429, "ratelimited", wait)
            rec.handled = True
            return JSONResponse({"ok": True, **handler(args)})
        except SlackError as err:
            rec.error = err.error
            body: dict[str, Any] = {"ok": False, "error": err.error}
            if err.errors:
                body["errors"] = err.errors
                body["response_metadata"] = {"messages": [f"[ERROR] {e}" for e in err.errors]}
            return JSONResponse(body)

    @staticmethod
    def _refuse(rec: RecordedRequest, status: int, error: str, retry_after: int | None) -> Response:
        rec.error = error
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse({"ok": False, "error": error}, status, headers)

    def _authenticate(self, rec: RecordedRequest, args: dict[str, Any]) -> None:
        auth = rec.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else args.get("token")
        if not token:
            raise SlackError("not_authed")
        if token != self.bot_token:
            raise SlackError("invalid_auth")

    def _admit(self, method: str, args: dict[str, Any]) -> int:
        if not self.enforce_limits:
            return 0
        if method == "chat.postMessage":
            channel = str(args.get("channel", ""))
            key = self._existing_channel(channel) or channel
            # ~1 message per second per channel with short bursts (api-contracts §3.3)
            return self._post_buckets.setdefault(key, _TokenBucket(3, self.time_scale)).take()
        window = self._windows.get(method)
        return window.admit() if window else 0

    # --- methods ------------------------------------------------------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://sandbox.slack.com/",
            "team": "Sandbox",
            "user": "mailwarden",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _users_lookup_by_email(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args.get("email", "")).lower()
        for user in self._users.values():
            if user["profile"]["email"].lower() == email:
                return {"user": copy.deepcopy(user)}
        raise SlackError("users_not_found")

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"user": copy.deepcopy(self._require_user(str(args.get("user", ""))))}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [u.strip() for u in str(args.get("users", "")).split(",") if u.strip()]
        if not users:
            raise SlackError("users_list_not_supplied")
        if len(users) > 1:
            raise SlackError("sandbox_does_not_emulate_group_dms")
        user = self._require_user(users[0])
        if user["deleted"]:
            raise SlackError("user_disabled")
        already_open = _dm_id(user["id"]) in self._dm_users
        body: dict[str, Any] = {"channel": {"id": self.dm_channel(user["id"])}}
        return {**body, "no_op": True, "already_open": True} if already_open else body

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for_post(str(args.get("channel", "")))
        blocks = _parse_blocks(args.get("blocks"))
        text = str(args.get("text") or "")
        if not text and not blocks and not args.get("attachments"):
            raise SlackError("no_text")
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        metadata = _parse_metadata(args.get("metadata"))
        stored = self._store(channel, text, blocks or [], thread_ts)
        stored["metadata"] = metadata
        stored["broadcast"] = bool(thread_ts) and _flag(args.get("reply_broadcast"))
        return {"channel": channel, "ts": stored["ts"], "message": self._wire(stored)}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """Newest first, top-level messages and broadcast replies, paged by cursor (api-contracts §3)."""
        channel = self._readable_channel(args)
        listed = [m for m in self._messages.get(channel, []) if not m["thread_ts"] or m.get("broadcast")]
        return self._page_of(list(reversed(listed)), args)

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """The parent, then its replies oldest first."""
        channel = self._readable_channel(args)
        parent = self._find_message(channel, str(args.get("ts", "")), SlackError("thread_not_found"))
        replies = [m for m in self._messages.get(channel, []) if m["thread_ts"] == parent["ts"]]
        return self._page_of([parent, *replies], args)

    def _readable_channel(self, args: dict[str, Any]) -> str:
        channel = str(args.get("channel", ""))
        if channel not in self._channels:  # history takes a conversation ID, never a user ID
            raise SlackError("channel_not_found")
        return channel

    def _page_of(self, messages: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
        try:
            limit = max(1, min(999, int(args.get("limit") or 100)))
            start = int(str(args.get("cursor") or "0").removeprefix("next_ts:") or 0)
        except ValueError:
            raise SlackError("invalid_cursor") from None
        metadata = _flag(args.get("include_all_metadata"))
        chunk = messages[start : start + limit]
        more = start + limit < len(messages)
        body: dict[str, Any] = {
            "messages": [self._wire(m, metadata=metadata) for m in chunk],
            "has_more": more,
        }
        if more:
            body["response_metadata"] = {"next_cursor": f"next_ts:{start + limit}"}
        return body

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._existing_channel(str(args.get("channel", "")))
        if channel is None:
            raise SlackError("channel_not_found")
        message = self._find_message(channel, str(args.get("ts", "")), SlackError("message_not_found"))
        blocks = _parse_blocks(args.get("blocks"))
        if "text" not in args and blocks is None:
            raise SlackError("no_text")
        # Slack keeps whichever of text/blocks the update leaves out.
        if "text" in args:
            message["text"] = str(args["text"] or "")
        if blocks is not None:
            message["blocks"] = _assign_block_ids(blocks)
        wire = self._wire(message)
        return {"channel": channel, "ts": message["ts"], "text": message["text"], "message": wire}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_for_post(str(args.get("channel", "")))
        user = self._require_user(str(args.get("user", "")))
        blocks = _parse_blocks(args.get("blocks"))
        text = str(args.get("text") or "")
        if not text and not blocks and not args.get("attachments"):
            raise SlackError("no_text")
        message_ts = self._next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": user["id"],
                "text": text,
                "blocks": blocks or [],
                "thread_ts": args.get("thread_ts"),
                "message_ts": message_ts,
            }
        )
        return {"message_ts": message_ts}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        members = self._usergroups.get(str(args.get("usergroup", "")))
        if members is None:
            raise SlackError("no_such_subteam")
        return {"users": list(members)}

    # --- state --------------------------------------------------------------------------------------

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._existing_channel(str(args.get("channel", "")))
        if channel is None:
            raise SlackError("channel_not_found")
        ts = str(args.get("message_ts", ""))
        self._find_message(channel, ts, SlackError("message_not_found"))
        return {"channel": channel, "permalink": f"https://sandbox.slack.com/archives/{channel}/p{ts.replace('.', '')}"}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = str(args.get("trigger_id") or "")
        issued = self._triggers.pop(trigger, None)
        if issued is None:
            raise SlackError("invalid_trigger_id" if trigger else "invalid_arguments")
        if time.monotonic() - issued[1] > 3.0:  # trigger_ids live about 3 seconds
            raise SlackError("expired_trigger_id")
        view = _parse_view(args.get("view"), "modal")
        view_id = f"V{secrets.token_hex(5).upper()}"
        self.views[view_id] = {"user": issued[0], "view": view, "type": "modal"}
        return {"view": {"id": view_id, **view}}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args.get("user_id") or "")
        self._require_user(user_id)
        view = _parse_view(args.get("view"), "home")
        self.homes[user_id] = view
        return {"view": {"id": f"V{secrets.token_hex(5).upper()}", **view}}

    def _require_user(self, user_id: str) -> dict[str, Any]:
        if user_id not in self._users:
            raise SlackError("user_not_found")
        return self._users[user_id]

    def _existing_channel(self, channel: str) -> str | None:
        """The channel ID, also for a user ID whose DM is open; None when Slack would not know it."""
        if channel in self._channels:
            return channel
        dm = _dm_id(channel)
        return dm if channel in self._users and dm in self._dm_users else None

    def _channel_for_post(self, channel: str) -> str:
        if channel in self._channels:
            return channel
        if channel in self._users:  # a user ID posts into the app's DM with that user
            return self.dm_channel(channel)
        raise SlackError("channel_not_found")

    def _find_message(self, channel: str, ts: str, missing: Exception | None = None) -> dict[str, Any]:
        for message in self._messages.get(channel, []):
            if message["ts"] == ts:
                return message
        raise missing or KeyError(f"no message {ts} in {channel}")

    def _next_ts(self) -> str:
        self._seq += 1
        micros = self._seq * 100
        return f"{_FIRST_TS + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _store(self, channel: str, text: str, blocks: list[Any], thread_ts: str | None) -> dict[str, Any]:
        message = {
            "channel": channel,
            "ts": self._next_ts(),
            "text": text,
            "blocks": _assign_block_ids(blocks),
            "thread_ts": thread_ts,
        }
        self._messages.setdefault(channel, []).append(message)
        return message

    def _wire(self, message: dict[str, Any], *, metadata: bool = True) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "ts": message["ts"],
            "text": message["text"],
        }
        if message["blocks"]:
            wire["blocks"] = copy.deepcopy(message["blocks"])
        if message["thread_ts"]:
            wire["thread_ts"] = message["thread_ts"]
        if metadata and message.get("metadata"):
            wire["metadata"] = copy.deepcopy(message["metadata"])
        return wire

    # --- interactivity ------------------------------------------------------------------------------

    async def click(
        self,
        *,
        request_url: str,
        user_id: str,
        channel: str,
        ts: str,
        action_id: str,
        value: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        """Deliver a block_actions payload for a button press, signed as Slack signs it."""
        message = self._find_message(self._existing_channel(channel) or channel, ts)
        block, button = _find_button(message["blocks"], action_id)
        if not self.base_url:
            raise RuntimeError("set SlackEmulator.base_url to the emulator's URL before clicking")
        hook = secrets.token_urlsafe(16)
        self._hooks[hook] = (message["channel"], ts, user_id)
        user = self._users.get(user_id, {"name": user_id})
        action: dict[str, Any] = {
            "type": "button",
            "action_id": action_id,
            "block_id": block["block_id"],
            "text": button.get("text"),
            "action_ts": f"{time.time():.6f}",
        }
        if value is not None or "value" in button:
            action["value"] = value if value is not None else button["value"]
        trigger = f"{secrets.randbelow(10**11)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
        payload = {
            "type": "block_actions",
            "user": {"id": user_id, "username": user["name"], "name": user["name"], "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": "legacy-verification-token",
            "team": {"id": self.team_id, "domain": "sandbox"},
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": message["channel"],
                "is_ephemeral": False,
            },
            "trigger_id": trigger,
            "channel": {"id": message["channel"], "name": self._channels.get(message["channel"], "")},
            "message": self._wire(message),
            "response_url": f"{self.base_url}/response/{hook}",
            "actions": [action],
            "state": {"values": {}},
        }
        self._triggers[trigger] = (user_id, time.monotonic())
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
        return await self._send_signed(request_url, body, "application/x-www-form-urlencoded", timestamp, signature)

    async def _send_signed(
        self,
        request_url: str,
        body: bytes,
        content_type: str,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac.new(self.signing_secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature if signature is not None else f"v0={digest.hexdigest()}",
        }
        self.last_delivery = (body, headers)
        return await _deliver(request_url, body, headers)

    def open_view(self, user_id: str) -> dict[str, Any]:
        """The modal most recently opened for this user (raises LookupError if none)."""
        for view_id in reversed(list(self.views)):
            if self.views[view_id]["user"] == user_id:
                return {"id": view_id, **copy.deepcopy(self.views[view_id]["view"])}
        raise LookupError(f"no modal open for {user_id}")

    async def submit(
        self, *, request_url: str, user_id: str, view_id: str, values: dict[str, dict[str, Any]]
    ) -> httpx.Response:
        """Deliver a view_submission for an open modal. `values` is {block_id: {action_id: value-object}},
        exactly the shape Slack puts in view.state.values."""
        stored = self.views.get(view_id)
        if stored is None or stored["user"] != user_id:
            raise LookupError(f"view {view_id} is not open for {user_id}")
        view = copy.deepcopy(stored["view"])
        user = self._users.get(user_id, {"name": user_id})
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "sandbox"},
            "user": {"id": user_id, "username": user["name"], "name": user["name"], "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": "legacy-verification-token",
            "trigger_id": f"{secrets.randbelow(10**11)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}",
            "view": {
                "id": view_id,
                "team_id": self.team_id,
                "type": "modal",
                "callback_id": view.get("callback_id", ""),
                "private_metadata": view.get("private_metadata", ""),
                "title": view.get("title"),
                "blocks": view.get("blocks", []),
                "state": {"values": values},
                "hash": secrets.token_hex(8),
                "app_id": self.app_id,
                "bot_id": self.bot_id,
            },
            "response_urls": [],
        }
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
        response = await self._send_signed(request_url, body, "application/x-www-form-urlencoded")
        if response.status_code == 200 and not response.content.strip():
            self.views.pop(view_id, None)  # an empty 200 closes the modal
        return response

    async def slash(
        self, *, request_url: str, user_id: str, text: str, command: str = "/mailwarden", channel: str | None = None
    ) -> httpx.Response:
        """Deliver a slash command as Slack does: signed, form-encoded fields, with a response_url."""
        channel = channel or self.dm_channel(user_id)
        hook = secrets.token_urlsafe(16)
        self._hooks[hook] = (channel, "", user_id)
        trigger = f"{secrets.randbelow(10**11)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
        self._triggers[trigger] = (user_id, time.monotonic())
        fields = {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "team_domain": "sandbox",
            "channel_id": channel,
            "channel_name": self._channels.get(channel, "directmessage"),
            "user_id": user_id,
            "user_name": self._users.get(user_id, {"name": user_id})["name"],
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "response_url": f"{self.base_url}/response/{hook}",
            "trigger_id": trigger,
        }
        return await self._send_signed(request_url, urlencode(fields).encode(), "application/x-www-form-urlencoded")

    async def app_home_opened(self, *, request_url: str, user_id: str) -> httpx.Response:
        """Deliver the Events API app_home_opened event (signed JSON, event_callback envelope)."""
        envelope = {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "type": "event_callback",
            "event_id": f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(time.time()),
            "event": {
                "type": "app_home_opened",
                "user": user_id,
                "channel": self.dm_channel(user_id),
                "tab": "home",
                "event_ts": f"{time.time():.6f}",
            },
            "authorizations": [{"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True}],
        }
        body = json.dumps(envelope, separators=(",", ":")).encode()
        return await self._send_signed(request_url, body, "application/json")

    async def redeliver(self, request_url: str) -> httpx.Response:
        """Send the last delivery again, byte for byte: what a replaying attacker would do."""
        if self.last_delivery is None:
            raise RuntimeError("nothing has been delivered yet")
        return await _deliver(request_url, *self.last_delivery)

    async def _response_url(self, request: Request) -> Response:
        rec = await capture(request)
        self.requests.append(rec)
        response = self._respond(rec, request.path_params["token"])
        rec.status = response.status_code
        return response

    def _respond(self, rec: RecordedRequest, token: str) -> Response:
        fault = self.faults.take("response_url")
        if fault:
            return _hook_failure(rec, fault.status, fault.error or "fatal_error")
        if token not in self._hooks:
            return _hook_failure(rec, 404, "expired_url")
        channel, ts, user = self._hooks[token]
        try:
            body = json.loads(rec.body)
            if not isinstance(body, dict):
                raise ValueError("not an object")
            blocks = _parse_blocks(body.get("blocks")) or []
        except ValueError:
            return _hook_failure(rec, 400, "invalid_payload")
        except SlackError as err:
            return _hook_failure(rec, 400, err.error)
        text = str(body.get("text") or "")
        if body.get("delete_original") or body.get("replace_original"):
            original = next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)
            if original is None:
                return _hook_failure(rec, 404, "message_not_found")
            if body.get("delete_original"):
                self._messages[channel].remove(original)
            else:
                original["text"], original["blocks"] = text, _assign_block_ids(blocks)
        elif body.get("response_type") == "in_channel":
            self._store(channel, text, blocks, body.get("thread_ts"))
        else:
            thread_ts = body.get("thread_ts")
            self.ephemerals.append(
                {"channel": channel, "user": user, "text": text, "blocks": blocks, "thread_ts": thread_ts}
            )
        rec.handled = True
        return PlainTextResponse("ok")


def _parse_view(raw: Any, expected: str) -> dict[str, Any]:
    """Views arrive as a JSON object or string; enforce what Slack enforces on them."""
    try:
        view = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise SlackError("invalid_arguments") from None
    if not isinstance(view, dict) or view.get("type") != expected:
        raise SlackError("invalid_arguments")
    blocks = view.get("blocks") or []
    if not isinstance(blocks, list) or len(blocks) > 100:
        raise SlackError("invalid_blocks")
    if expected == "modal":
        for key in ("title", "submit", "close"):
            text = (view.get(key) or {}).get("text", "")
            if len(text) > 24:
                raise SlackError("invalid_arguments", [f"{key} must be 24 characters or fewer"])
        if len(str(view.get("private_metadata", ""))) > 3000 or len(str(view.get("callback_id", ""))) > 255:
            raise SlackError("invalid_arguments")
    _parse_blocks([b for b in blocks if b.get("type") != "input"])  # per-block limits, as for messages
    if len(json.dumps(view)) > 250_000:
        raise SlackError("view_too_large")
    return copy.deepcopy(view)


def _hook_failure(rec: RecordedRequest, status: int, error: str) -> Response:
    # Slack's hooks answer in plain text, not the Web API's JSON envelope.
    rec.error = error
    return PlainTextResponse(error, status)


def _flag(value: Any) -> bool:
    """A boolean argument as Slack reads it: JSON true, or "1" / "true" in a query or form body."""
    return str(value).lower() in ("1", "true")


def _parse_metadata(raw: Any) -> dict[str, Any] | None:
    """chat.postMessage's `metadata`: an object (JSON body) or its JSON text (form body), with a string
    event_type and an object event_payload; Slack refuses anything else."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SlackError("invalid_metadata_format") from None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("event_type"), str)
        or not isinstance(raw.get("event_payload"), dict)
    ):
        raise SlackError("invalid_metadata_format")
    return {"event_type": raw["event_type"], "event_payload": raw["event_payload"]}


def _dm_id(user_id: str) -> str:
    return f"D{user_id[1:]}"  # stable per user, and readable in test output


def _method_of(rec: RecordedRequest) -> str:
    return "response_url" if rec.path.startswith("/response/") else rec.path.removeprefix("/api/")


def _parse_args(rec: RecordedRequest) -> dict[str, Any]:
    args: dict[str, Any] = dict(parse_qsl(rec.query, keep_blank_values=True))
    if not rec.body:
        return args
    if "json" in rec.headers.get("content-type", ""):
        try:
            body = json.loads(rec.body)
        except ValueError:
            raise SlackError("invalid_json") from None
        if not isinstance(body, dict):
            raise SlackError("invalid_json")
        return {**args, **body}
    return {**args, **dict(parse_qsl(rec.body.decode(), keep_blank_values=True))}


async def _deliver(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=ACK_TIMEOUT_S) as http:
        return await http.post(url, content=body, headers=headers)


def _assign_block_ids(blocks: list[Any]) -> list[Any]:
    # Slack fills in a block_id for every block that has none, and echoes it back in payloads.
    for block in blocks:
        if isinstance(block, dict) and not block.get("block_id"):
            block["block_id"] = secrets.token_urlsafe(4)
    return blocks


def _find_button(blocks: list[Any], action_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for block in blocks:
        for element in _interactive_elements(block):
            if element.get("type") == "button" and element.get("action_id") == action_id:
                return block, element
    raise LookupError(f"no button with action_id {action_id!r} in the message")


def _interactive_elements(block: dict[str, Any]) -> list[dict[str, Any]]:
    elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
    if isinstance(block.get("accessory"), dict):
        elements.append(block["accessory"])
    return [e for e in elements if isinstance(e, dict)]


def _parse_blocks(raw: Any) -> list[Any] | None:
    """The blocks argument, validated the way Slack does; None when it was not given."""
    if raw is None:
        return None
    if isinstance(raw, str):  # form-encoded requests carry blocks as a JSON string
        if not raw.strip():
            return []
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SlackError("invalid_blocks_format") from None
    if not isinstance(raw, list):
        raise SlackError("invalid_blocks_format")
    errors = _block_errors(raw)
    if errors:
        raise SlackError("invalid_blocks", errors)
    if len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False)) > MAX_BLOCKS_JSON:
        raise SlackError("msg_blocks_too_long")
    return raw


def _block_errors(blocks: list[Any]) -> list[str]:
    errors: list[str] = []

    def too_long(value: Any, limit: int, pointer: str) -> None:
        if isinstance(value, str) and len(value) > limit:
            errors.append(f"must be less than {limit + 1} characters [json-pointer:{pointer}]")

    def too_many(items: Any, limit: int, pointer: str) -> None:
        if isinstance(items, list) and len(items) > limit:
            errors.append(f"must be less than {limit + 1} items [json-pointer:{pointer}]")

    too_many(blocks, MAX_BLOCKS, "/blocks")
    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"missing required field: type [json-pointer:{at}]")
            continue
        too_long(block.get("block_id"), 255, f"{at}/block_id")
        kind = block["type"]
        if kind == "header":
            too_long(_text_of(block.get("text")), 150, f"{at}/text/text")
        elif kind == "section":
            too_long(_text_of(block.get("text")), 3000, f"{at}/text/text")
            too_many(block.get("fields"), 10, f"{at}/fields")
            for j, item in enumerate(block.get("fields") or []):
                too_long(_text_of(item), 2000, f"{at}/fields/{j}/text")
        elif kind == "context":
            too_many(block.get("elements"), 10, f"{at}/elements")
        elif kind == "actions":
            too_many(block.get("elements"), 25, f"{at}/elements")
        for j, element in enumerate(_interactive_elements(block)):
            where = f"{at}/accessory" if element is block.get("accessory") else f"{at}/elements/{j}"
            too_long(element.get("action_id"), 255, f"{where}/action_id")
            if element.get("type") == "button":
                too_long(_text_of(element.get("text")), 75, f"{where}/text/text")
                too_long(element.get("value"), 2000, f"{where}/value")
    return errors


def _text_of(obj: Any) -> Any:
    return obj.get("text") if isinstance(obj, dict) else None
