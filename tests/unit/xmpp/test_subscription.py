"""RFC 6121 Appendix A, row by row: every state × every subscription stanza, both directions."""

from __future__ import annotations

import pytest

from imactor.xmpp.subscription import SubState, inbound, outbound

NONE = SubState("none")
NONE_PO = SubState("none", pending_out=True)
NONE_PI = SubState("none", pending_in=True)
NONE_PO_PI = SubState("none", pending_out=True, pending_in=True)
TO = SubState("to")
TO_PI = SubState("to", pending_in=True)
FROM = SubState("from")
FROM_PO = SubState("from", pending_out=True)
BOTH = SubState("both")

# (state, new state) for each table; a state mapped to itself is "no state change".
OUT_SUBSCRIBE = {NONE: NONE_PO, NONE_PO: NONE_PO, NONE_PI: NONE_PO_PI, NONE_PO_PI: NONE_PO_PI, TO: TO,
                 TO_PI: TO_PI, FROM: FROM_PO, FROM_PO: FROM_PO, BOTH: BOTH}  # fmt: skip
OUT_UNSUBSCRIBE = {NONE: NONE, NONE_PO: NONE, NONE_PI: NONE_PI, NONE_PO_PI: NONE_PI, TO: NONE, TO_PI: NONE_PI,
                   FROM: FROM, FROM_PO: FROM, BOTH: FROM}  # fmt: skip
OUT_SUBSCRIBED = {NONE_PI: FROM, NONE_PO_PI: FROM_PO, TO_PI: BOTH, FROM: FROM, FROM_PO: FROM_PO, BOTH: BOTH}
OUT_UNSUBSCRIBED = {NONE: NONE, NONE_PO: NONE_PO, NONE_PI: NONE, NONE_PO_PI: NONE_PO, TO: TO, TO_PI: TO,
                    FROM: NONE, FROM_PO: NONE_PO, BOTH: TO}  # fmt: skip
IN_SUBSCRIBE_DELIVERED = {NONE: NONE_PI, NONE_PO: NONE_PO_PI, TO: TO_PI}
IN_UNSUBSCRIBE = {NONE: NONE, NONE_PO: NONE_PO, NONE_PI: NONE, NONE_PO_PI: NONE_PO, TO: TO, TO_PI: TO,
                  FROM: NONE, FROM_PO: NONE_PO, BOTH: TO}  # fmt: skip
IN_SUBSCRIBED = {NONE: NONE, NONE_PO: TO, NONE_PI: NONE_PI, NONE_PO_PI: TO_PI, TO: TO, TO_PI: TO_PI,
                 FROM: FROM, FROM_PO: BOTH, BOTH: BOTH}  # fmt: skip
IN_UNSUBSCRIBED = {NONE: NONE, NONE_PO: NONE, NONE_PI: NONE_PI, NONE_PO_PI: NONE_PI, TO: NONE, TO_PI: NONE_PI,
                   FROM: FROM, FROM_PO: FROM, BOTH: FROM}  # fmt: skip


OUT_TABLES = [("subscribe", OUT_SUBSCRIBE), ("unsubscribe", OUT_UNSUBSCRIBE), ("subscribed", OUT_SUBSCRIBED),
              ("unsubscribed", OUT_UNSUBSCRIBED)]  # fmt: skip


@pytest.mark.parametrize(("kind", "table"), OUT_TABLES)
def test_outbound_table(kind: str, table: dict[SubState, SubState]) -> None:
    for state, expected in table.items():
        outcome = outbound(state, kind)
        assert outcome.state == expected, (kind, state)
        assert outcome.changed == (expected != state)


@pytest.mark.parametrize(("kind", "table"), [("unsubscribe", IN_UNSUBSCRIBE), ("subscribed", IN_SUBSCRIBED),
                                             ("unsubscribed", IN_UNSUBSCRIBED)])  # fmt: skip
def test_inbound_table(kind: str, table: dict[SubState, SubState]) -> None:
    for state, expected in table.items():
        outcome = inbound(state, kind)
        assert outcome.state == expected, (kind, state)
        # Delivered to the user exactly when the state changed (A.3.2–A.3.4).
        assert outcome.deliver == (expected != state), (kind, state)


def test_inbound_subscribe() -> None:
    for state, expected in IN_SUBSCRIBE_DELIVERED.items():
        outcome = inbound(state, "subscribe")
        assert (outcome.state, outcome.deliver, outcome.auto_reply) == (expected, True, None)
    for state in (FROM, FROM_PO, BOTH):
        outcome = inbound(state, "subscribe")
        assert (outcome.state, outcome.deliver, outcome.auto_reply) == (state, False, "subscribed")
    for state in (NONE_PI, NONE_PO_PI, TO_PI):
        outcome = inbound(state, "subscribe")
        assert (outcome.state, outcome.deliver, outcome.auto_reply) == (state, False, None)


def test_outbound_routing() -> None:
    assert outbound(NONE, "subscribe").route
    assert outbound(BOTH, "unsubscribe").route
    assert outbound(NONE_PI, "subscribed").route
    assert not outbound(FROM, "subscribed").route  # nothing pending: nothing to say
    assert outbound(FROM, "unsubscribed").route
    assert not outbound(NONE, "unsubscribed").route


def test_pre_approval() -> None:
    """§3.4: 'subscribed' with no pending request pre-approves; the next subscribe is auto-accepted."""
    approved = outbound(NONE, "subscribed")
    assert approved.state == SubState("none", approved=True)
    assert not approved.route
    assert approved.changed
    accepted = inbound(approved.state, "subscribe")
    assert accepted.state == FROM
    assert accepted.auto_reply == "subscribed"
    assert not accepted.deliver
    cancelled = outbound(approved.state, "unsubscribed")
    assert cancelled.state == NONE
    assert not cancelled.route


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a subscription type"):
        outbound(NONE, "probe")
    with pytest.raises(ValueError, match="not a subscription type"):
        inbound(NONE, "available")
