"""The Slack emulator, driven through slack_sdk's AsyncWebClient and AsyncWebhookClient like the bot."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.server import LoopbackServer
from sandbox.slack import SlackEmulator

TOKEN = "xoxb-sandbox"
SECRET = "sandbox-signing-secret"


@dataclass
class Slack:
    emu: SlackEmulator
    url: str
    client: AsyncWebClient


@pytest.fixture
async def slack() -> AsyncIterator[Slack]:
    emu = SlackEmulator()
    emu.add_user("U0ADA", "ada@contoso.example", "Ada Lovelace", tz="Europe/Lisbon", tz_offset=0)
    emu.add_user("U0BOB", "bob@contoso.example", "Bob Baker")
    emu.add_channel("C0SOC", "soc-mailwarden")
    emu.add_usergroup("S0SOC", "soc", ["U0BOB"])
    async with LoopbackServer(emu.app, "slack") as url:
        emu.base_url = url
        yield Slack(emu, url, AsyncWebClient(token=TOKEN, base_url=url + "/api/"))


def plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def card(*, deny_text: str = "Not me") -> list[dict[str, Any]]:
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": "New sign-in from *Lisbon, PT*. Was it you?"}},
        {
            "type": "actions",
            "block_id": "answer",
            "elements": [
                {"type": "button", "action_id": "yes", "text": plain("Yes"), "value": "c-1"},
                {"type": "button", "action_id": "deny", "text": plain(deny_text)},
            ],
        },
    ]


async def test_auth_test_and_tokens(slack: Slack) -> None:
    reply = await slack.client.auth_test(team_id="T0SANDBOX")
    assert (reply["user_id"], reply["bot_id"]) == ("UMAILWARDEN", "BMAILWARDEN")
    assert reply["team_id"] == "T0SANDBOX"
    assert slack.emu.requests[0].params == {"team_id": "T0SANDBOX"}
    for token, error in ((None, "not_authed"), ("xoxb-wrong", "invalid_auth")):
        with pytest.raises(SlackApiError) as caught:
            await AsyncWebClient(token=token, base_url=slack.url + "/api/").auth_test()
        assert caught.value.response.status_code == 200 and caught.value.response["error"] == error
    assert slack.emu.calls("auth.test") == 1


async def test_users_and_usergroups(slack: Slack) -> None:
    found = await slack.client.users_lookupByEmail(email="ADA@contoso.example")
    user = found["user"]
    assert (user["id"], user["tz"], user["tz_offset"], user["profile"]["email"]) == (
        "U0ADA",
        "Europe/Lisbon",
        0,
        "ada@contoso.example",
    )
    assert slack.emu.requests[-1].method == "GET"  # slack_sdk sends lookupByEmail as a query
    with pytest.raises(SlackApiError) as caught:
        await slack.client.users_lookupByEmail(email="mallory@contoso.example")
    assert caught.value.response["error"] == "users_not_found"
    assert (await slack.client.users_info(user="U0BOB"))["user"]["real_name"] == "Bob Baker"
    assert (await slack.client.usergroups_users_list(usergroup="S0SOC"))["users"] == ["U0BOB"]
    with pytest.raises(SlackApiError) as caught:
        await slack.client.usergroups_users_list(usergroup="S0NOPE")
    assert caught.value.response["error"] == "no_such_subteam"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        unknown = await http.post(f"{slack.url}/api/chat.scheduleMessage")
    assert unknown.json() == {"ok": False, "error": "unknown_method"}


async def test_dm_post_and_update(slack: Slack) -> None:
    opened = await slack.client.conversations_open(users="U0ADA")
    dm = opened["channel"]["id"]
    assert dm == slack.emu.dm_channel("U0ADA") and dm.startswith("D")
    assert (await slack.client.conversations_open(users="U0ADA"))["already_open"] is True
    posted = await slack.client.chat_postMessage(channel="U0ADA", text="Was it you?", blocks=card())
    assert posted["channel"] == dm and posted["message"]["user"] == "UMAILWARDEN"
    thread = await slack.client.chat_postMessage(channel=dm, text="details", thread_ts=posted["ts"])
    assert float(posted["ts"]) < float(thread["ts"]) and posted["ts"] == "1780000000.000100"
    assert slack.emu.requests[-1].headers["content-type"].startswith("application/json")

    updated = await slack.client.chat_update(channel=dm, ts=posted["ts"], text="Thanks, noted.", blocks=[])
    assert updated["text"] == "Thanks, noted."
    first, reply = slack.emu.messages(dm)
    assert (first["text"], first["blocks"], first["thread_ts"]) == ("Thanks, noted.", [], None)
    assert reply["thread_ts"] == posted["ts"]
    with pytest.raises(SlackApiError) as caught:
        await slack.client.chat_update(channel=dm, ts="1.000001", text="x")
    assert caught.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as caught:
        await slack.client.chat_postMessage(channel="C0NOWHERE", text="x")
    assert caught.value.response["error"] == "channel_not_found"

    ephemeral = await slack.client.chat_postEphemeral(channel="C0SOC", user="U0BOB", text="only you")
    assert ephemeral["message_ts"] and slack.emu.ephemerals[0]["user"] == "U0BOB"
    assert slack.emu.calls("chat.postMessage") == 2


async def test_block_kit_limits(slack: Slack) -> None:
    slack.emu.enforce_limits = False  # refused posts still count against the channel's pacing
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x"}}
    cases = [
        ([section] * 51, "invalid_blocks", "[json-pointer:/blocks]"),
        (card(deny_text="n" * 76), "invalid_blocks", "/blocks/1/elements/1/text/text"),
        ([{**section, "text": {"type": "mrkdwn", "text": "y" * 2900}}] * 5, "msg_blocks_too_long", None),
    ]
    for blocks, error, detail in cases:
        with pytest.raises(SlackApiError) as caught:
            await slack.client.chat_postMessage(channel="C0SOC", text="t", blocks=blocks)
        assert caught.value.response["error"] == error
        if detail:
            assert detail in caught.value.response["errors"][0]
    with (
        pytest.raises(SlackApiError) as caught,
        pytest.warns(UserWarning, match="`text` argument is missing"),
    ):
        await slack.client.chat_postMessage(channel="C0SOC")
    assert caught.value.response["error"] == "no_text"
    # Form bodies carry blocks as a JSON string.
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        form = await http.post(
            f"{slack.url}/api/chat.postMessage",
            data={"channel": "C0SOC", "blocks": json.dumps(card(deny_text="n" * 76))},
        )
    assert form.json()["error"] == "invalid_blocks"
    assert slack.emu.messages("C0SOC") == []


async def test_post_message_rate_limit(slack: Slack) -> None:
    for _ in range(3):
        await slack.client.chat_postMessage(channel="C0SOC", text="burst")
    with pytest.raises(SlackApiError) as caught:
        await slack.client.chat_postMessage(channel="C0SOC", text="one too many")
    assert caught.value.response.status_code == 429
    assert caught.value.response["error"] == "ratelimited"
    assert caught.value.response.headers["retry-after"] == "1"
    await slack.client.chat_postMessage(channel="U0ADA", text="other channels have their own bucket")

    # slack_sdk retries only connection errors unless a 429 handler is added, as the bot must.
    retry = AsyncRateLimitErrorRetryHandler(max_retry_count=2)
    patient = AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/", retry_handlers=[retry])
    started = time.monotonic()
    await patient.chat_postMessage(channel="C0SOC", text="after waiting")
    assert time.monotonic() - started >= 0.9
    assert slack.emu.calls("chat.postMessage") == 5
    assert len(slack.emu.messages("C0SOC")) == 4


async def test_injected_server_error(slack: Slack) -> None:
    slack.emu.faults.inject(r"^chat\.postMessage$", 500)
    with pytest.raises(SlackApiError) as caught:
        await slack.client.chat_postMessage(channel="C0SOC", text="x")
    assert caught.value.response.status_code == 500
    assert (await slack.client.chat_postMessage(channel="C0SOC", text="x"))["ok"] is True
    assert [r.status for r in slack.emu.requests] == [500, 200]


async def test_history_and_replies_return_metadata_only_when_asked(slack: Slack) -> None:
    meta = {"event_type": "mailwarden_delivery", "event_payload": {"delivery": "7.1"}}
    parent = await slack.client.chat_postMessage(channel="C0SOC", text="card", metadata=meta)
    reply = await slack.client.chat_postMessage(channel="C0SOC", text="in thread", thread_ts=parent["ts"])
    shout = await slack.client.chat_postMessage(
        channel="C0SOC", text="broadcast", thread_ts=parent["ts"], reply_broadcast=True
    )
    plain_history = await slack.client.conversations_history(channel="C0SOC")
    # newest first; a thread reply is not in the channel's history unless it was broadcast
    assert [m["ts"] for m in plain_history["messages"]] == [shout["ts"], parent["ts"]]
    assert all("metadata" not in m for m in plain_history["messages"])
    history = await slack.client.conversations_history(channel="C0SOC", include_all_metadata=True)
    assert history["messages"][1]["metadata"] == meta
    thread = await slack.client.conversations_replies(channel="C0SOC", ts=parent["ts"], include_all_metadata=True)
    assert [m["ts"] for m in thread["messages"]] == [parent["ts"], reply["ts"], shout["ts"]]
    with pytest.raises(SlackApiError) as caught:
        await slack.client.conversations_history(channel="U0ADA")  # a user ID is not a conversation
    assert caught.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as caught:
        await slack.client.chat_postMessage(channel="U0ADA", text="x", metadata={"event_type": 5})  # type: ignore[dict-item]
    assert caught.value.response["error"] == "invalid_metadata_format"


async def test_history_pages_by_cursor(slack: Slack) -> None:
    slack.emu.enforce_limits = False  # five posts in a row would be paced
    posted = [(await slack.client.chat_postMessage(channel="C0SOC", text=f"m{i}"))["ts"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await slack.client.conversations_history(channel="C0SOC", limit=2, cursor=cursor)
        seen += [m["ts"] for m in page["messages"]]
        cursor = page.get("response_metadata", {}).get("next_cursor")
        if not page["has_more"]:
            break
    assert seen == list(reversed(posted))


async def test_after_effect_fault_posts_but_answers_with_an_error(slack: Slack) -> None:
    slack.emu.faults.inject(r"^chat\.postMessage$", 503, after_effect=True)
    with pytest.raises(SlackApiError) as caught:
        await slack.client.chat_postMessage(channel="C0SOC", text="landed anyway")
    assert caught.value.response.status_code == 503
    assert [m["text"] for m in slack.emu.messages("C0SOC")] == ["landed anyway"]


@dataclass
class Receiver:
    """A stand-in for the bot's Request URL that checks requests the way bolt does."""

    deliveries: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    verifier: SignatureVerifier = field(default_factory=lambda: SignatureVerifier(SECRET))

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.deliveries.append((body, dict(request.headers)))
        valid = self.verifier.is_valid_request(body, dict(request.headers))
        return Response(status_code=200 if valid else 401)

    def payload(self, n: int = -1) -> dict[str, Any]:
        body, headers = self.deliveries[n]
        assert headers["content-type"] == "application/x-www-form-urlencoded"
        return json.loads(parse_qs(body.decode())["payload"][0])  # type: ignore[no-any-return]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rx = Receiver()
    app = Starlette(routes=[Route("/slack/events", rx.endpoint, methods=["POST"])])
    async with LoopbackServer(app, "bot") as url:
        yield rx, url + "/slack/events"


async def test_click_delivers_a_signed_block_actions_payload(slack: Slack, receiver: tuple[Receiver, str]) -> None:
    rx, request_url = receiver
    posted = await slack.client.chat_postMessage(channel="U0ADA", text="Was it you?", blocks=card())
    reply = await slack.emu.click(
        request_url=request_url, user_id="U0ADA", channel=posted["channel"], ts=posted["ts"], action_id="yes"
    )
    assert reply.status_code == 200
    payload = rx.payload()
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U0ADA", "username": "ada", "name": "ada", "team_id": "T0SANDBOX"}
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": posted["channel"],
        "is_ephemeral": False,
    }
    assert payload["channel"] == {"id": posted["channel"], "name": "directmessage"}
    (action,) = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"]) == ("yes", "answer", "c-1")
    assert payload["message"]["ts"] == posted["ts"] and payload["message"]["bot_id"] == "BMAILWARDEN"
    assert payload["message"]["blocks"][0]["block_id"]  # Slack assigns the ids the poster left out
    assert payload["response_url"].startswith(f"{slack.url}/response/")

    # Addressing the DM by user ID works too, and the value can be forged.
    where = {"request_url": request_url, "user_id": "U0ADA", "channel": "U0ADA", "ts": posted["ts"]}
    await slack.emu.click(**where, action_id="deny", value="x")
    assert rx.payload()["actions"][0]["value"] == "x"
    with pytest.raises(LookupError):
        await slack.emu.click(**where, action_id="nope")


async def test_forged_stale_and_replayed_deliveries(slack: Slack, receiver: tuple[Receiver, str]) -> None:
    rx, request_url = receiver
    posted = await slack.client.chat_postMessage(channel="C0SOC", text="SOC card", blocks=card())
    where = {"request_url": request_url, "user_id": "U0BOB", "channel": "C0SOC", "ts": posted["ts"]}
    forged = await slack.emu.click(**where, action_id="yes", signature="v0=" + "0" * 64)
    assert forged.status_code == 401 and rx.deliveries[-1][1]["x-slack-signature"] == "v0=" + "0" * 64
    stale = await slack.emu.click(**where, action_id="yes", timestamp=int(time.time()) - 400)
    assert stale.status_code == 401

    fresh = await slack.emu.click(**where, action_id="yes")
    replayed = await slack.emu.redeliver(request_url)
    assert fresh.status_code == replayed.status_code == 200
    (body1, headers1), (body2, headers2) = rx.deliveries[-2:]
    assert body1 == body2
    names = ("x-slack-signature", "x-slack-request-timestamp", "content-type")
    assert [headers1[n] for n in names] == [headers2[n] for n in names]


async def test_response_url(slack: Slack, receiver: tuple[Receiver, str]) -> None:
    rx, request_url = receiver
    posted = await slack.client.chat_postMessage(channel="U0ADA", text="Was it you?", blocks=card())
    dm, ts = posted["channel"], posted["ts"]
    await slack.emu.click(request_url=request_url, user_id="U0ADA", channel=dm, ts=ts, action_id="deny")
    respond = AsyncWebhookClient(rx.payload()["response_url"])  # what bolt's respond() uses

    private = await respond.send(text="Only you can see this")
    assert (private.status_code, private.body) == (200, "ok")
    assert slack.emu.ephemerals[-1] == {
        "channel": dm,
        "user": "U0ADA",
        "text": "Only you can see this",
        "blocks": [],
        "thread_ts": None,
    }
    replaced = await respond.send(text="Thanks, the SOC is on it.", replace_original=True)
    assert replaced.body == "ok"
    assert slack.emu.message(dm, ts)["text"] == "Thanks, the SOC is on it."
    assert slack.emu.message(dm, ts)["blocks"] == []
    assert (await respond.send(text="gone", delete_original=True)).body == "ok"
    assert slack.emu.messages(dm) == []
    stale = await AsyncWebhookClient(f"{slack.url}/response/unknown").send(text="x")
    assert stale.status_code == 404
    assert slack.emu.calls("response_url") == 3
