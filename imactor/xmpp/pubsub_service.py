"""Rules of a publish-subscribe service (XEP-0060 at ``pubsub.<domain>``), sans-IO.

The PEP core (`imactor.xmpp.pubsub`) gives the node configuration and its form, publish-options
preconditions, payload checks and event payloads; a service node adds what PEP does not have:
a publish model (§16.4.3 `pubsub#publish_model`) and affiliations (§4.1) instead of the owner's
roster. Access models are open and whitelist (§4.5; presence and roster need an owner's
roster, which a service node does not have). The shell is `imactor/modules/pubsub.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from imactor.xmpp import dataforms as forms
from imactor.xmpp import pubsub as ps
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_DATA_FORMS, NS_PUBSUB, qname
from imactor.xmpp.stanza import Element

ACCESS_MODELS = ("open", "whitelist")
PUBLISH_MODELS = ("publishers", "subscribers", "open")
AFFILIATIONS = ("owner", "publisher", "member", "none", "outcast")
META_DATA = "http://jabber.org/protocol/pubsub#meta-data"
_PUBLISH_MODEL = "pubsub#publish_model"
_ACCESS = "pubsub#access_model"
_GROUPS = "pubsub#roster_groups_allowed"

#: disco#info features of the service (§10).
FEATURES = (NS_PUBSUB, *(
    f"{NS_PUBSUB}#{name}"
    for name in (
        "access-open", "access-whitelist", "config-node", "create-and-configure", "create-nodes",
        "delete-items", "delete-nodes", "instant-nodes", "item-ids", "last-published",
        "manage-affiliations", "manage-subscriptions", "meta-data", "modify-affiliations",
        "outcast-affiliation", "persistent-items", "publish", "publish-options",
        "publisher-affiliation", "member-affiliation", "purge-nodes", "retract-items",
        "retrieve-affiliations", "retrieve-default", "retrieve-items", "retrieve-subscriptions",
        "subscribe",
    )
))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A service node's configuration: PEP's `NodeConfig` plus its publish model."""

    base: ps.NodeConfig
    publish_model: str = "publishers"

    @classmethod
    def default(cls, max_items: int) -> ServiceConfig:
        """§8.3 defaults of a service node: open, the owner and publishers publish, the last item
        to new subscribers."""
        return cls(ps.NodeConfig(access_model="open", max_items=max_items, send_last_published_item="on_sub"))

    def configured(
        self, form: forms.SubmittedForm, limits: ps.Limits, form_type: str = ps.NODE_CONFIG
    ) -> ServiceConfig:
        """This configuration changed by a submitted form (§8.2.4).

        Raises:
            StanzaError: `bad-request` for a malformed form, `not-acceptable` for a value the
                service does not offer.
        """
        values = {k: v for k, v in form.values.items() if k not in (_PUBLISH_MODEL, _GROUPS)}
        base = self.base.configured(forms.SubmittedForm(form.type, values), limits, form_type)
        if base.access_model not in ACCESS_MODELS:
            raise StanzaError("not-acceptable", f"{_ACCESS}: expected one of {', '.join(ACCESS_MODELS)}")
        try:
            model = form.choice(_PUBLISH_MODEL, PUBLISH_MODELS, self.publish_model)
        except forms.FormError as error:
            raise StanzaError("not-acceptable", str(error)) from None
        assert model is not None
        return replace(self, base=base, publish_model=model)

    def check_preconditions(self, form: forms.SubmittedForm, limits: ps.Limits) -> None:
        """§7.1.5: every field of the publish-options must equal the node's value.

        Raises:
            StanzaError: `conflict` + `precondition-not-met` when one differs.
        """
        try:
            wanted = self.configured(form, limits, ps.PUBLISH_OPTIONS)
        except StanzaError as error:
            if error.condition == "bad-request":
                raise
            raise ps.pubsub_error("conflict", "precondition-not-met", error.text) from None
        if wanted != self:
            raise ps.pubsub_error("conflict", "precondition-not-met", "the node's configuration differs")

    def form(self, parent: Element, limits: ps.Limits, form_type: str = "form") -> Element:
        """The `pubsub#node_config` form (§8.2.1, §8.3): PEP's fields, without roster groups,
        with the service's access models and the publish model."""
        form = self.base.form(parent, limits, form_type)
        field_tag = qname(NS_DATA_FORMS, "field")
        for element in list(form.iterchildren(field_tag)):
            if element.get("var") == _GROUPS:
                form.remove(element)
            elif element.get("var") == _ACCESS:
                for option in list(element.iterchildren(qname(NS_DATA_FORMS, "option"))):
                    if option.get("label") not in ACCESS_MODELS:
                        element.remove(option)
                holder = forms.build(parent, "form", [forms.Field(
                    _PUBLISH_MODEL, "list-single", "Who may publish", values=(self.publish_model,),
                    options=tuple((m, m) for m in PUBLISH_MODELS))])  # fmt: skip
                parent.remove(holder)
                element.addnext(holder[0])
        return form

    def to_json(self) -> dict[str, object]:
        return {**self.base.to_json(), "publish_model": self.publish_model}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ServiceConfig:
        return cls(ps.NodeConfig.from_json(data), str(data.get("publish_model", "publishers")))


# ---- who may do what (§4.1) -----------------------------------------------------------------


def check_access(config: ServiceConfig, affiliation: str) -> None:
    """Whether an entity may subscribe and retrieve items (§6.1.3, §6.5.9).

    Raises:
        StanzaError: `forbidden` for an outcast, `not-allowed` + `closed-node` for a whitelist
            node the entity is not on.
    """
    if affiliation == "outcast":
        raise StanzaError("forbidden", "you are banned from this node")
    if config.base.access_model == "whitelist" and affiliation not in ("owner", "publisher", "member"):
        raise ps.pubsub_error("not-allowed", "closed-node")


def may_publish(config: ServiceConfig, affiliation: str, subscribed: bool) -> bool:
    """§7.1.3.1 with the publish model (§16.4.3)."""
    if affiliation in ("owner", "publisher"):
        return True
    if affiliation == "outcast":
        return False
    if config.publish_model == "open":
        return True
    return config.publish_model == "subscribers" and subscribed


def may_retract(affiliation: str) -> bool:
    """§7.2.3.1: the owner and publishers retract any item (others whom the publish model lets
    publish retract their own, which storage checks)."""
    return affiliation in ("owner", "publisher")


def meta_data(parent: Element, config: ServiceConfig, owners: list[str]) -> Element:
    """§5.4: the node's meta-data form in its disco#info."""
    fields = [
        forms.Field("pubsub#title", values=(config.base.title,)),
        forms.Field(_ACCESS, values=(config.base.access_model,)),
        forms.Field(_PUBLISH_MODEL, values=(config.publish_model,)),
        forms.Field("pubsub#max_items", values=(str(config.base.max_items),)),
        forms.Field("pubsub#owner", "jid-multi", values=tuple(owners)),
    ]
    return forms.build(parent, "result", fields, namespace=META_DATA)
