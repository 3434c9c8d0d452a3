"""Several Microsoft tenants: each with its own Graph, sources, containment and SOC channel."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.slack.ids import Ids
from sandbox import demo
from sandbox.graph import GraphEmulator
from sandbox.server import LoopbackServer
from sandbox.world import GRAPH_TOKEN, START, TENANT, Sandbox, sign_in

TENANT_B = "00000000-0000-0000-0000-0000000000bb"
BEA = ("bea@fabrikam.example", "Bea Brandt", "33333333-0000-0000-0000-000000000001")


async def test_two_tenants_each_with_their_own_graph_and_soc_channel(tmp_path: Path) -> None:
    sb = Sandbox(str(tmp_path / "two.db"))
    graph_b = GraphEmulator(sb.clock.now, token=GRAPH_TOKEN, tenant_id=TENANT_B)
    server_b = LoopbackServer(graph_b.app, "graph-b")
    url_b = await server_b.start()
    sb.overrides = {
        "tenants": [
            {"id": TENANT, "client_id": "app-a", "auth": "workload_identity"},  # the sandbox's own Graph and SOC
            {
                "id": TENANT_B,
                "client_id": "app-b",
                "auth": "workload_identity",
                "graph_url": url_b,
                "soc_channel": "C0SOCB",
            },
        ]
    }
    sb.seed()
    sb.slack.add_channel("C0SOCB", "soc-fabrikam")
    upn, name, gid = BEA
    sb.slack.add_user("U0BEA", upn, name)
    graph_b.add_user(gid, upn, name, sign_in_sessions_valid_from=START - timedelta(days=60))
    for day in range(30, 0, -2):
        graph_b.add_sign_in(sign_in(upn, gid, name, START - timedelta(days=day), seq=day))
    await sb.start()
    try:
        assert {p.tenant for p in sb.bot.pollers} == {TENANT, TENANT_B}
        for poller in sb.bot.pollers:
            await poller.poll_once()
        t0 = sb.clock.now()
        for i in range(6):
            graph_b.add_sign_in(
                sign_in(
                    upn,
                    gid,
                    name,
                    t0 + timedelta(seconds=30 * i),
                    ok=False,
                    seq=100 + i,
                    ip="185.220.101.4",
                    country="RU",
                )
            )
        graph_b.add_sign_in(
            sign_in(upn, gid, name, t0 + timedelta(minutes=4), seq=110, ip="185.220.101.4", country="RU")
        )
        sb.clock.advance(timedelta(minutes=7))
        for poller in sb.bot.pollers:
            await poller.poll_once()
        await sb.bot.dispatcher.drain()
        case = await demo.latest_case(sb, upn)
        assert case is not None and case.tenant == TENANT_B
        card = await demo.wait_card(sb, upn, "user_card")
        await sb.click("U0BEA", card, Ids.USER_NO)
        soc = await demo.wait_card(sb, upn, "soc_card")
        assert soc["channel"] == "C0SOCB" and sb.soc_cards() == []  # tenant B's own SOC channel
        await sb.click("U0BOB", soc, Ids.SOC_REVOKE)
        await demo.wait_state(sb, upn, "contained", "bea's case to be contained")
        assert graph_b.calls("POST", rf"/v1.0/users/{gid}/revokeSignInSessions") == 1
        assert sb.graph.writes() == []  # tenant A's Graph was never asked to contain tenant B's user
    finally:
        await sb.stop()
        await server_b.stop()
