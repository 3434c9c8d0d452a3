"""Microsoft Entra ID containment through msgraph-sdk.

Retries: kiota's RetryHandler already retries 429/503/504 honouring Retry-After (including POST);
nothing here wraps it again (reference/api-contracts.md §1.8).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from actions.base import Action, ActionOutcome


def graph_error(exc: ODataError) -> dict[str, Any]:
    err = exc.error
    return {
        "status": exc.response_status_code,
        "code": err.code if err else None,
        "message": (err.message if err else None) or str(exc),
    }


class RevokeSessions:
    """POST /users/{id}/revokeSignInSessions: every refresh token and session cookie stops working.

    The docs show 200 {"value": true}; older revisions said 204. Both mean done.
    https://learn.microsoft.com/graph/api/user-revokesigninsessions
    """

    name = "revoke_sessions"
    provider = "microsoft"
    permission = "User.RevokeSessions.All"
    destructive = False

    def __init__(self, graph: GraphServiceClient) -> None:
        self.graph = graph

    async def run(self, target: str) -> ActionOutcome:
        try:
            resp = await self.graph.users.by_user_id(target).revoke_sign_in_sessions.post()
        except ODataError as exc:
            info = graph_error(exc)
            return ActionOutcome(False, f"Graph refused to revoke sessions: {info['code']} ({info['status']})", info)
        if resp is not None and resp.value is False:
            return ActionOutcome(False, "Graph answered value=false: sessions not revoked", {"value": False})
        return ActionOutcome(True, "All sign-in sessions revoked", {"value": True})

    async def already_done(self, target: str, since: datetime) -> bool | None:
        config = RequestConfiguration(
            query_parameters=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
                select=["id", "signInSessionsValidFromDateTime"]
            )
        )
        try:
            user = await self.graph.users.by_user_id(target).get(request_configuration=config)
        except ODataError:
            return None
        valid_from = user.sign_in_sessions_valid_from_date_time if user else None
        if valid_from is None:
            return None
        return bool(valid_from >= since)


def microsoft_actions(graph: GraphServiceClient) -> list[Action]:
    """Every Microsoft action, bound to one tenant's Graph client."""
    return [RevokeSessions(graph)]
