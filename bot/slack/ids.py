"""Every Slack action_id, callback_id and command Mailwarden uses, declared once for cards and listeners."""

from __future__ import annotations

from enum import StrEnum


class Ids(StrEnum):
    # the employee's DM card
    USER_YES = "mw.user.yes"
    USER_NO = "mw.user.no"
    USER_NOT_ME = "mw.user.not_me"
    # the SOC card
    SOC_REVOKE = "mw.soc.revoke_sessions"
    SOC_CONTAIN = "mw.soc.contain"
    SOC_SECOND_APPROVAL = "mw.soc.second_approval"
    SOC_BENIGN = "mw.soc.benign"
    SOC_ESCALATE = "mw.soc.escalate"
    SOC_TAKE = "mw.soc.take"
    # travel requests
    TRAVEL_APPROVE = "mw.travel.approve"
    TRAVEL_REFUSE = "mw.travel.refuse"
    # modals (callback_id) and their inputs (block_id / action_id)
    MODAL_CONTAIN = "mw.modal.contain"
    MODAL_BENIGN = "mw.modal.benign"
    IN_ACTIONS = "mw.in.actions"
    IN_REASON = "mw.in.reason"
    IN_ALLOW_SCOPE = "mw.in.allow_scope"
    IN_ALLOW_DAYS = "mw.in.allow_days"


USER_BUTTONS = (Ids.USER_YES, Ids.USER_NO, Ids.USER_NOT_ME)
SOC_BUTTONS = (Ids.SOC_REVOKE, Ids.SOC_CONTAIN, Ids.SOC_SECOND_APPROVAL, Ids.SOC_BENIGN, Ids.SOC_ESCALATE, Ids.SOC_TAKE)
TRAVEL_BUTTONS = (Ids.TRAVEL_APPROVE, Ids.TRAVEL_REFUSE)
COMMAND = "/mailwarden"
