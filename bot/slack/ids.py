"""Every Slack action_id Mailwarden uses, declared once for the cards and the listeners."""

from __future__ import annotations

from enum import StrEnum


class Ids(StrEnum):
    USER_YES = "mw.user.yes"
    USER_NO = "mw.user.no"
    SOC_REVOKE = "mw.soc.revoke_sessions"
    SOC_DISMISS = "mw.soc.dismiss"


USER_BUTTONS = (Ids.USER_YES, Ids.USER_NO)
SOC_BUTTONS = (Ids.SOC_REVOKE, Ids.SOC_DISMISS)
