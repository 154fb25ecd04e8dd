"""RFC 6121 Appendix A: the presence subscription state machine, as pure tables.

A state is (subscription, pending_out, pending_in) where subscription is "none" | "to" | "from" |
"both". Pre-approval (§3.4) is handled beside the tables. Each function returns the new state and
what the server must do with the stanza; the user actor applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Subscription = Literal["none", "to", "from", "both"]


@dataclass(frozen=True, slots=True)
class SubState:
    subscription: Subscription = "none"
    pending_out: bool = False
    pending_in: bool = False
    approved: bool = False  #: pre-approved: an inbound subscribe is accepted at once


@dataclass(frozen=True, slots=True)
class Outcome:
    state: SubState
    changed: bool  #: roster push needed
    route: bool = False  #: outbound: send the stanza on to the contact
    deliver: bool = False  #: inbound: deliver the stanza to the user's available resources
    auto_reply: str | None = None  #: inbound: answer the contact with this presence type


def _has_to(s: SubState) -> bool:
    return s.subscription in ("to", "both")


def _has_from(s: SubState) -> bool:
    return s.subscription in ("from", "both")


def _sub(to: bool, from_: bool) -> Subscription:
    return "both" if to and from_ else "to" if to else "from" if from_ else "none"


def _outcome(old: SubState, new: SubState, **flags: bool | str | None) -> Outcome:
    return Outcome(state=new, changed=new != old, **flags)  # type: ignore[arg-type]


def outbound(state: SubState, presence_type: str) -> Outcome:
    """The user sends `presence_type` to the contact (RFC 6121 §3, table A.2)."""
    to, from_ = _has_to(state), _has_from(state)
    if presence_type == "subscribe":
        # A.2.1: always routed (a repeated request is harmless); pending-out unless already To.
        new = state if to else SubState(state.subscription, True, state.pending_in, state.approved)
        return _outcome(state, new, route=True)
    if presence_type == "unsubscribe":
        new = SubState(_sub(False, from_), False, state.pending_in, state.approved)
        return _outcome(state, new, route=True)
    if presence_type == "subscribed":
        if state.pending_in:
            new = SubState(_sub(to, True), state.pending_out, False, False)
            return _outcome(state, new, route=True)
        if not from_ and not state.approved:
            # §3.4: no request pending: this is a pre-approval, kept and not routed.
            return _outcome(state, SubState(state.subscription, state.pending_out, False, True))
        return _outcome(state, state)
    if presence_type == "unsubscribed":
        if from_ or state.pending_in or state.approved:
            new = SubState(_sub(to, False), state.pending_out, False, False)
            return _outcome(state, new, route=from_ or state.pending_in)
        return _outcome(state, state)
    raise ValueError(f"not a subscription type: {presence_type!r}")


def inbound(state: SubState, presence_type: str) -> Outcome:
    """The contact's `presence_type` reaches the user (RFC 6121 §3, table A.3)."""
    to, from_ = _has_to(state), _has_from(state)
    if presence_type == "subscribe":
        if from_:
            # Already subscribed: the server answers for the user (§3.1.3).
            return _outcome(state, state, auto_reply="subscribed")
        if state.approved:
            new = SubState(_sub(to, True), state.pending_out, False, False)
            return _outcome(state, new, auto_reply="subscribed")
        if state.pending_in:
            return _outcome(state, state)  # already known; not delivered again
        new = SubState(state.subscription, state.pending_out, True, state.approved)
        return _outcome(state, new, deliver=True)
    if presence_type == "unsubscribe":
        if from_ or state.pending_in:
            new = SubState(_sub(to, False), state.pending_out, False, state.approved)
            return _outcome(state, new, deliver=True)
        return _outcome(state, state)
    if presence_type == "subscribed":
        if state.pending_out:
            new = SubState(_sub(True, from_), False, state.pending_in, state.approved)
            return _outcome(state, new, deliver=True)
        return _outcome(state, state)
    if presence_type == "unsubscribed":
        if to or state.pending_out:
            new = SubState(_sub(False, from_), False, state.pending_in, state.approved)
            return _outcome(state, new, deliver=True)
        return _outcome(state, state)
    raise ValueError(f"not a subscription type: {presence_type!r}")
