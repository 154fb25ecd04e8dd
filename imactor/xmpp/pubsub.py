"""Publish-subscribe (XEP-0060) rules for Personal Eventing (XEP-0163), sans-IO.

What a PEP service decides without touching storage or the network: a node's configuration and
its data form (§16.4 `pubsub#node_config`), the access models (§4.5: open, presence, roster,
whitelist), publish-options preconditions (§7.1.5), item and node limits, the event payloads of
notifications (§7.1.2, §7.2.2, §8.4, §8.5), and the `+notify` features of XEP-0163 §4.2 (the
caps that carry them are verified by `imactor.xmpp.caps`).

The shell (`imactor/modules/pep.py`) reads nodes and items from storage, asks `NodeConfig` and
the checks here, and routes what they build.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from lxml import etree

from imactor.xmpp import dataforms as forms
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import (
    NS_PUBSUB,
    NS_PUBSUB_ERRORS,
    NS_PUBSUB_EVENT,
    qname,
)
from imactor.xmpp.stanza import Element, child, default_ns

NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"

ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
NOTIFICATION_TYPES = ("headline", "normal")

#: XEP-0163 §1: the features a PEP service offers (disco#info of the account and the server).
FEATURES = tuple(
    f"{NS_PUBSUB}#{name}"
    for name in (
        "access-open", "access-presence", "access-roster", "access-whitelist", "auto-create",
        "auto-subscribe", "config-node", "create-and-configure", "create-nodes", "delete-items",
        "delete-nodes", "filtered-notifications", "item-ids", "last-published", "multi-items",
        "persistent-items", "presence-notifications", "presence-subscribe", "publish",
        "publish-options", "purge-nodes", "retract-items", "retrieve-default", "retrieve-items",
    )
)  # fmt: skip


def pubsub_error(condition: str, app: str | None = None, text: str = "") -> StanzaError:
    """A stanza error with XEP-0060's application condition (`pubsub#errors` namespace)."""
    return StanzaError(condition, text, app_condition=None if app is None else (NS_PUBSUB_ERRORS, app))


def single_op(payload: Element, allowed: tuple[str, ...]) -> Element:
    """The one action element of a <pubsub/> request among `allowed` (<configure/>,
    <publish-options/> and <options/> may ride along)."""
    ops = [c for c in payload if isinstance(c.tag, str) and etree.QName(c).localname in allowed]
    if len(ops) != 1:
        raise StanzaError("bad-request", "one pubsub action expected")
    return ops[0]


def requested_ids(op: Element) -> list[str]:
    """§6.5.8: the ids of the <item/> children of an <items/> request (empty ones left out)."""
    return [i for i in (item.get("id") for item in op.iterchildren(qname(NS_PUBSUB, "item"))) if i]


def max_items(op: Element, most: int) -> int:
    """§6.5.7: how many items an <items/> request asks for, at most `most` (at least 1)."""
    text = op.get("max_items")
    if text is None:
        return most
    try:
        limit = int(text)
    except ValueError:
        raise StanzaError("bad-request", "max_items must be an integer") from None
    if limit < 1:
        raise StanzaError("bad-request", "max_items must be positive")
    return min(limit, most)


def subscriber_jid(op: Element, requester: JID) -> JID:
    """§6.1.3.1 / §6.2.3.3: the `jid` of a (un)subscribe `op` must be the requester's (bare or full)."""
    try:
        jid = JID.parse(op.get("jid", ""))
    except ValueError:
        raise pubsub_error("bad-request", "invalid-jid", "the jid is not a JID") from None
    if jid.bare != requester.bare:
        raise pubsub_error("bad-request", "invalid-jid", "you may only subscribe yourself")
    return jid


@dataclass(frozen=True, slots=True)
class Limits:
    """The service's bounds (module options): "max" for max_items means `max_items`."""

    max_items: int = 256  #: most items one node keeps
    max_item_bytes: int = 65536  #: largest item payload, serialized
    max_nodes: int = 128  #: nodes per account


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A node's configuration (§16.4); the defaults are PEP's (XEP-0163 §4.4, §6)."""

    access_model: str = "presence"
    max_items: int = 1
    persist_items: bool = True
    send_last_published_item: str = "on_sub_and_presence"
    notify_retract: bool = True
    notify_delete: bool = True
    deliver_notifications: bool = True
    deliver_payloads: bool = True
    notification_type: str = "headline"
    roster_groups_allowed: tuple[str, ...] = ()
    title: str = ""

    # ---- forms ---------------------------------------------------------------------------

    def configured(
        self, form: forms.SubmittedForm, limits: Limits, form_type: str = NODE_CONFIG
    ) -> NodeConfig:
        """This configuration changed by a submitted form (§8.2.4, §7.1.5).

        Raises:
            StanzaError: `bad-request` for a form that is not a submitted `form_type` form,
                `not-acceptable` for a value out of range or a field the service does not know.
        """
        if form.type != "submit" or (form.form_type is not None and form.form_type != form_type):
            raise StanzaError("bad-request", f"expected a submitted {form_type} form")
        known = {"FORM_TYPE", *_FIELDS}
        unknown = sorted(var for var in form.values if var not in known)
        if unknown:
            raise StanzaError("not-acceptable", f"unsupported field {unknown[0]}")
        flag, choice = form.boolean, form.choice
        try:
            return replace(
                self,
                access_model=_required(choice(_F.access, ACCESS_MODELS, self.access_model)),
                max_items=_max_items(form.text(_F.max_items), self.max_items, limits),
                persist_items=_flag(flag(_F.persist, self.persist_items)),
                send_last_published_item=_required(
                    choice(_F.send_last, SEND_LAST, self.send_last_published_item)
                ),
                notify_retract=_flag(flag(_F.notify_retract, self.notify_retract)),
                notify_delete=_flag(flag(_F.notify_delete, self.notify_delete)),
                deliver_notifications=_flag(flag(_F.deliver_notifications, self.deliver_notifications)),
                deliver_payloads=_flag(flag(_F.deliver_payloads, self.deliver_payloads)),
                notification_type=_required(
                    choice(_F.notification_type, NOTIFICATION_TYPES, self.notification_type)
                ),
                roster_groups_allowed=form.texts(_F.groups)
                if _F.groups in form
                else self.roster_groups_allowed,
                title=form.text(_F.title, self.title) or "",
            )
        except forms.FormError as error:
            raise StanzaError("not-acceptable", str(error)) from None

    def form(self, parent: Element, limits: Limits, form_type: str = "form") -> Element:
        """Append this configuration as a `pubsub#node_config` form (§8.2.1, §8.3)."""
        flag = forms.boolean_value
        fields = [
            forms.Field(_F.access, "list-single", "Who may subscribe and retrieve items",
                        values=(self.access_model,), options=tuple((m, m) for m in ACCESS_MODELS)),
            forms.Field(_F.max_items, "text-single", f"Most items kept (at most {limits.max_items}, or max)",
                        values=(str(self.max_items),)),
            forms.Field(_F.persist, "boolean", "Persist items", values=(flag(self.persist_items),)),
            forms.Field(_F.send_last, "list-single", "When to send the last published item",
                        values=(self.send_last_published_item,), options=tuple((s, s) for s in SEND_LAST)),
            forms.Field(_F.notify_retract, "boolean", "Notify retractions",
                        values=(flag(self.notify_retract),)),
            forms.Field(_F.notify_delete, "boolean", "Notify node deletion",
                        values=(flag(self.notify_delete),)),
            forms.Field(_F.deliver_notifications, "boolean", "Deliver event notifications",
                        values=(flag(self.deliver_notifications),)),
            forms.Field(_F.deliver_payloads, "boolean", "Deliver payloads with notifications",
                        values=(flag(self.deliver_payloads),)),
            forms.Field(_F.notification_type, "list-single", "Message type of notifications",
                        values=(self.notification_type,), options=tuple((t, t) for t in NOTIFICATION_TYPES)),
            forms.Field(_F.groups, "list-multi", "Roster groups allowed (access model roster)",
                        values=self.roster_groups_allowed),
            forms.Field(_F.title, "text-single", "Title", values=(self.title,)),
        ]  # fmt: skip
        return forms.build(parent, form_type, fields, namespace=NODE_CONFIG)

    def check_preconditions(self, form: forms.SubmittedForm, limits: Limits) -> None:
        """§7.1.5: every field of the publish-options must equal the existing node's value.

        Raises:
            StanzaError: `bad-request` for a malformed form; `conflict` with
                `precondition-not-met` when a value differs (or names an unknown field).
        """
        try:
            wanted = self.configured(form, limits, PUBLISH_OPTIONS)
        except StanzaError as error:
            if error.condition == "bad-request":
                raise
            raise pubsub_error("conflict", "precondition-not-met", error.text) from None
        for var in form.values:
            if var == "FORM_TYPE":
                continue
            attribute = _FIELDS[var]
            if getattr(wanted, attribute) != getattr(self, attribute):
                raise pubsub_error("conflict", "precondition-not-met", f"{var} differs")

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _FIELDS.values()}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> NodeConfig:
        known = {k: v for k, v in data.items() if k in _FIELDS.values()}
        if "roster_groups_allowed" in known:
            known["roster_groups_allowed"] = tuple(known["roster_groups_allowed"])  # type: ignore[arg-type]
        return cls(**known)  # type: ignore[arg-type]


class _F:
    """Field names of the node configuration form (§16.4.3)."""

    access = "pubsub#access_model"
    max_items = "pubsub#max_items"
    persist = "pubsub#persist_items"
    send_last = "pubsub#send_last_published_item"
    notify_retract = "pubsub#notify_retract"
    notify_delete = "pubsub#notify_delete"
    deliver_notifications = "pubsub#deliver_notifications"
    deliver_payloads = "pubsub#deliver_payloads"
    notification_type = "pubsub#notification_type"
    groups = "pubsub#roster_groups_allowed"
    title = "pubsub#title"


#: form field → `NodeConfig` attribute
_FIELDS: dict[str, str] = {
    _F.access: "access_model",
    _F.max_items: "max_items",
    _F.persist: "persist_items",
    _F.send_last: "send_last_published_item",
    _F.notify_retract: "notify_retract",
    _F.notify_delete: "notify_delete",
    _F.deliver_notifications: "deliver_notifications",
    _F.deliver_payloads: "deliver_payloads",
    _F.notification_type: "notification_type",
    _F.groups: "roster_groups_allowed",
    _F.title: "title",
}


def _required(value: str | None) -> str:
    assert value is not None  # a default was given
    return value


def _flag(value: bool | None) -> bool:
    assert value is not None  # a default was given
    return value


def _max_items(value: str | None, default: int, limits: Limits) -> int:
    if value is None or value.strip() == "":
        return default
    if value.strip() == "max":  # XEP-0060 §16.4.3 (1.15.5): the service's maximum
        return limits.max_items
    try:
        number = int(value.strip())
    except ValueError:
        raise forms.FormError(f"field {_F.max_items!r}: {value!r} is not an integer or max") from None
    if not 1 <= number <= limits.max_items:
        raise forms.FormError(f"field {_F.max_items!r}: {number} is outside 1..{limits.max_items}")
    return number


def parse_options_form(parent: Element | None) -> forms.SubmittedForm | None:
    """The data form inside <publish-options/> or <configure/> (None when there is none).

    Raises:
        StanzaError: `bad-request` for a form that does not parse.
    """
    if parent is None:
        return None
    form = parent.find(forms.FORM)
    if form is None:
        return None
    try:
        return forms.parse(form)
    except forms.FormError as error:
        raise StanzaError("bad-request", str(error)) from None


# ---- access (§4.5) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Relation:
    """What the owner's roster says about the entity asking (XEP-0163 §4.5)."""

    is_owner: bool = False
    subscription: str = "none"  #: the owner's roster item for the entity: none/to/from/both
    groups: tuple[str, ...] = ()


def may_access(config: NodeConfig, relation: Relation) -> bool:
    """Whether an entity may receive notifications and retrieve items of a node."""
    if relation.is_owner:
        return True
    match config.access_model:
        case "open":
            return True
        case "presence":
            return relation.subscription in ("from", "both")
        case "roster":
            return bool(set(relation.groups) & set(config.roster_groups_allowed))
        case _:  # whitelist: only the owner (no affiliations to manage on a PEP node)
            return False


def access_error(config: NodeConfig) -> StanzaError:
    """§6.5.3 / §6.5.4 / §6.5.6: why an entity may not retrieve items."""
    match config.access_model:
        case "presence":
            return pubsub_error("not-authorized", "presence-subscription-required")
        case "roster":
            return pubsub_error("not-authorized", "not-in-roster-group")
        case _:
            return pubsub_error("not-allowed", "closed-node")


# ---- items -------------------------------------------------------------------------------


def check_node_name(node: str | None) -> str:
    if not node:
        raise pubsub_error("bad-request", "nodeid-required")
    if len(node) > 1024:
        raise StanzaError("not-acceptable", "node name too long")
    return node


def check_payload(item: Element, limits: Limits) -> Element:
    """§7.1.3: exactly one payload element per item, no larger than the service accepts."""
    payloads = [c for c in item if isinstance(c.tag, str)]
    if len(payloads) != 1:
        raise pubsub_error("bad-request", "invalid-payload")
    if len(etree.tostring(payloads[0])) > limits.max_item_bytes:
        raise pubsub_error("not-acceptable", "payload-too-big")
    return payloads[0]


def item_element(parent: Element, namespace: str, item_id: str, payload: bytes | None) -> Element:
    """Append <item id=…>payload</item> in `namespace` (pubsub or pubsub#event)."""
    item = child(parent, namespace, "item")
    item.set("id", item_id)
    if payload is not None:
        item.append(etree.fromstring(payload, _PARSER))
    return item


def event(node: str, kind: str) -> tuple[Element, Element]:
    """A <event><kind node/></event> payload (kind: items, delete, purge); returns (event, kind)."""
    root = etree.Element(qname(NS_PUBSUB_EVENT, "event"), nsmap=default_ns(NS_PUBSUB_EVENT))
    inner = child(root, NS_PUBSUB_EVENT, kind)
    inner.set("node", node)
    return root, inner


def items_event(node: str, items: Sequence[tuple[str, bytes | None]]) -> Element:
    """§7.1.2.1: notification of published items (payload None: without payload)."""
    root, inner = event(node, "items")
    for item_id, payload in items:
        item_element(inner, NS_PUBSUB_EVENT, item_id, payload)
    return root


def retract_event(node: str, item_ids: Iterable[str]) -> Element:
    """§7.2.2.1: notification of retracted items."""
    root, inner = event(node, "items")
    for item_id in item_ids:
        child(inner, NS_PUBSUB_EVENT, "retract").set("id", item_id)
    return root


def notify_nodes(features: Iterable[str]) -> frozenset[str]:
    """XEP-0163 §4.2: the nodes an entity asks notifications of (`<node>+notify` features)."""
    return frozenset(f[: -len("+notify")] for f in features if f.endswith("+notify"))


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def pubsub_element(namespace: str = NS_PUBSUB) -> Element:
    return etree.Element(qname(namespace, "pubsub"), nsmap=default_ns(namespace))
