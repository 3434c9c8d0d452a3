"""The story contain-all-microsoft: an O365 consent record and an attacker's sign-in, the full plan."""

from __future__ import annotations

from collections import Counter

from sandbox import demo
from sandbox.world import MFA_GROUP, PEOPLE, Sandbox, eventually


async def test_contain_all_microsoft(sandbox: Sandbox) -> None:
    sandbox.run_scheduler()
    await eventually(lambda: sandbox.graph.calls("GET", r"/v1.0/auditLogs/signIns") > 0, what="first poll")
    await demo.contain_all_microsoft_plan(sandbox)  # the demo also waits for the thread's Slack messages
    upn, _, gid = PEOPLE["U0MALLORY"]
    case = await demo.latest_case(sandbox, upn)
    assert case is not None and case.state.value == "contained"
    assert {"oauth_mail_consent", "scripted_client"} <= set(case.detectors)
    writes = Counter((w["method"], w["path"]) for w in sandbox.graph.writes())
    assert writes[("DELETE", f"/v1.0/oauth2PermissionGrants/{demo.MAIL_APP_GRANT}")] == 1
    assert writes[("POST", f"/v1.0/groups/{MFA_GROUP}/members/$ref")] == 1
    assert writes[("POST", f"/v1.0/users/{gid}/revokeSignInSessions")] == 1
    assert set(writes.values()) == {1}
    assert sandbox.graph.group_members(MFA_GROUP) == [gid]
    # the consent came from the Management Activity API, with the publisher id on every call
    assert sandbox.o365.calls("GET", r"/audit/") >= 1
    assert all(r.params.get("PublisherIdentifier") for r in sandbox.o365.requests)
