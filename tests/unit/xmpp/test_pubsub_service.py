"""The sans-IO rules of the pubsub service: its node configuration (PEP's plus the publish
model), its form, preconditions and who may publish, retrieve and retract."""

from __future__ import annotations

import pytest
from lxml import etree

from imactor.xmpp import dataforms as forms
from imactor.xmpp import pubsub as ps
from imactor.xmpp import pubsub_service as service
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_DATA_FORMS, NS_PUBSUB_ERRORS
from imactor.xmpp.pubsub_service import ServiceConfig

LIMITS = ps.Limits(max_items=50, max_item_bytes=100, max_nodes=4)


def submitted(form_type: str = ps.NODE_CONFIG, **fields: str) -> forms.SubmittedForm:
    values = {f"pubsub#{k}": (v,) for k, v in fields.items()}
    values["FORM_TYPE"] = (form_type,)
    return forms.SubmittedForm("submit", values)


def test_defaults_of_a_service_node() -> None:
    config = ServiceConfig.default(7)
    assert config.base.access_model == "open"
    assert config.base.max_items == 7
    assert config.publish_model == "publishers"
    assert config.base.send_last_published_item == "on_sub"


def test_configured_reads_the_publish_model_and_the_pep_fields() -> None:
    config = ServiceConfig.default(3).configured(
        submitted(publish_model="open", access_model="whitelist", max_items="max", title="T"), LIMITS
    )
    assert config.publish_model == "open"
    assert config.base.access_model == "whitelist"
    assert config.base.max_items == 50
    assert config.base.title == "T"
    assert ServiceConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "fields",
    [{"publish_model": "everyone"}, {"access_model": "presence"}, {"access_model": "roster"},
     {"max_items": "51"}, {"unknown": "x"}],
)  # fmt: skip
def test_values_the_service_does_not_offer_are_not_acceptable(fields: dict[str, str]) -> None:
    with pytest.raises(StanzaError) as caught:
        ServiceConfig.default(3).configured(submitted(**fields), LIMITS)
    assert caught.value.condition == "not-acceptable"


def test_a_form_of_another_type_is_a_bad_request() -> None:
    with pytest.raises(StanzaError) as caught:
        ServiceConfig.default(3).configured(submitted("urn:other", title="x"), LIMITS)
    assert caught.value.condition == "bad-request"


def test_preconditions() -> None:
    config = ServiceConfig.default(3)
    config.check_preconditions(submitted(ps.PUBLISH_OPTIONS, access_model="open", publish_model="publishers"),
                               LIMITS)  # fmt: skip
    for fields in ({"access_model": "whitelist"}, {"publish_model": "open"}, {"access_model": "presence"}):
        with pytest.raises(StanzaError) as caught:
            config.check_preconditions(submitted(ps.PUBLISH_OPTIONS, **fields), LIMITS)
        assert caught.value.condition == "conflict"
        assert caught.value.app_condition == (NS_PUBSUB_ERRORS, "precondition-not-met")


def test_form_offers_the_service_fields_only() -> None:
    parent = etree.Element("holder")
    ServiceConfig.default(3).form(parent, LIMITS)
    assert len(parent) == 1
    fields = {f.get("var"): f for f in parent[0].iter(f"{{{NS_DATA_FORMS}}}field")}
    assert "pubsub#roster_groups_allowed" not in fields
    access = [o.get("label") for o in fields["pubsub#access_model"].iter(f"{{{NS_DATA_FORMS}}}option")]
    assert access == list(service.ACCESS_MODELS)
    assert fields["pubsub#publish_model"].findtext(f"{{{NS_DATA_FORMS}}}value") == "publishers"
    # The form a client gets back is one it may submit as it is.
    parsed = forms.parse(parent[0])
    assert ServiceConfig.default(3).configured(forms.SubmittedForm("submit", parsed.values), LIMITS) == (
        ServiceConfig.default(3)
    )


def test_access() -> None:
    open_node = ServiceConfig.default(3)
    closed = ServiceConfig(ps.NodeConfig(access_model="whitelist"))
    service.check_access(open_node, "none")
    for affiliation in ("owner", "publisher", "member"):
        service.check_access(closed, affiliation)
    with pytest.raises(StanzaError) as caught:
        service.check_access(closed, "none")
    assert (caught.value.condition, caught.value.app_condition) == ("not-allowed", (NS_PUBSUB_ERRORS,
                                                                                     "closed-node"))
    with pytest.raises(StanzaError) as caught:
        service.check_access(open_node, "outcast")
    assert caught.value.condition == "forbidden"


@pytest.mark.parametrize(
    ("model", "affiliation", "subscribed", "allowed"),
    [
        ("publishers", "owner", False, True), ("publishers", "publisher", False, True),
        ("publishers", "member", True, False), ("publishers", "none", True, False),
        ("subscribers", "none", True, True), ("subscribers", "none", False, False),
        ("open", "none", False, True), ("open", "outcast", False, False),
    ],
)  # fmt: skip
def test_may_publish(model: str, affiliation: str, subscribed: bool, allowed: bool) -> None:
    config = ServiceConfig(ps.NodeConfig(), publish_model=model)
    assert service.may_publish(config, affiliation, subscribed) is allowed


def test_may_retract() -> None:
    assert [a for a in service.AFFILIATIONS if service.may_retract(a)] == ["owner", "publisher"]
