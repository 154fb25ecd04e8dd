"""The sans-IO pubsub rules: node configuration forms, preconditions, access, limits, caps."""

from __future__ import annotations

import pytest
from lxml import etree

from imactor.xmpp import dataforms as forms
from imactor.xmpp import pubsub as ps
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_PUBSUB_ERRORS

LIMITS = ps.Limits(max_items=50, max_item_bytes=100, max_nodes=4)


def submitted(form_type: str | None, **fields: str) -> forms.SubmittedForm:
    values = {k.replace("__", "#"): (v,) for k, v in fields.items()}
    if form_type is not None:
        values["FORM_TYPE"] = (form_type,)
    return forms.SubmittedForm("submit", values)


def options(**fields: str) -> forms.SubmittedForm:
    return submitted(ps.PUBLISH_OPTIONS, **fields)


def test_defaults_are_pep_defaults() -> None:
    config = ps.NodeConfig()
    assert (config.access_model, config.max_items, config.persist_items) == ("presence", 1, True)


def test_configured_applies_fields_and_max() -> None:
    config = ps.NodeConfig().configured(
        submitted(ps.NODE_CONFIG, pubsub__access_model="open", pubsub__max_items="max",
                  pubsub__persist_items="false"), LIMITS)  # fmt: skip
    assert config.access_model == "open"
    assert config.max_items == LIMITS.max_items
    assert config.persist_items is False


@pytest.mark.parametrize(
    ("fields", "condition"),
    [
        ({"pubsub__access_model": "everyone"}, "not-acceptable"),
        ({"pubsub__max_items": "0"}, "not-acceptable"),
        ({"pubsub__max_items": "51"}, "not-acceptable"),
        ({"pubsub__max_items": "many"}, "not-acceptable"),
        ({"pubsub__persist_items": "perhaps"}, "not-acceptable"),
        ({"pubsub__no_such_field": "1"}, "not-acceptable"),
    ],
)
def test_configured_refuses_bad_values(fields: dict[str, str], condition: str) -> None:
    with pytest.raises(StanzaError) as caught:
        ps.NodeConfig().configured(submitted(ps.NODE_CONFIG, **fields), LIMITS)
    assert caught.value.condition == condition


def test_configured_refuses_wrong_form_type() -> None:
    with pytest.raises(StanzaError) as caught:
        ps.NodeConfig().configured(submitted("urn:other", pubsub__access_model="open"), LIMITS)
    assert caught.value.condition == "bad-request"
    with pytest.raises(StanzaError):
        ps.NodeConfig().configured(forms.SubmittedForm("form", {}), LIMITS)


def test_preconditions_met_and_not_met() -> None:
    node = ps.NodeConfig(access_model="open", max_items=LIMITS.max_items)
    node.check_preconditions(options(pubsub__access_model="open", pubsub__max_items="max"), LIMITS)
    with pytest.raises(StanzaError) as caught:
        node.check_preconditions(options(pubsub__access_model="presence"), LIMITS)
    assert caught.value.condition == "conflict"
    assert caught.value.app_condition == (NS_PUBSUB_ERRORS, "precondition-not-met")


def test_precondition_with_unknown_field_is_not_met_and_bad_form_is_bad_request() -> None:
    node = ps.NodeConfig()
    with pytest.raises(StanzaError) as caught:
        node.check_preconditions(options(pubsub__frobnicate="1"), LIMITS)
    assert caught.value.app_condition == (NS_PUBSUB_ERRORS, "precondition-not-met")
    with pytest.raises(StanzaError) as caught:
        node.check_preconditions(submitted(ps.NODE_CONFIG, pubsub__access_model="open"), LIMITS)
    assert caught.value.condition == "bad-request"


def test_json_round_trip() -> None:
    config = ps.NodeConfig(access_model="roster", roster_groups_allowed=("Friends",), max_items=7)
    assert ps.NodeConfig.from_json(config.to_json()) == config


def test_form_round_trips_through_configured() -> None:
    config = ps.NodeConfig(access_model="whitelist", max_items=9, notify_retract=False)
    parent = etree.Element("configure")
    form = config.form(parent, LIMITS, "submit")
    assert ps.NodeConfig().configured(forms.parse(form), LIMITS) == config


@pytest.mark.parametrize(
    ("model", "relation", "allowed"),
    [
        ("open", ps.Relation(), True),
        ("presence", ps.Relation(), False),
        ("presence", ps.Relation(subscription="to"), False),
        ("presence", ps.Relation(subscription="from"), True),
        ("presence", ps.Relation(subscription="both"), True),
        ("roster", ps.Relation(subscription="both", groups=("Work",)), False),
        ("roster", ps.Relation(groups=("Friends",)), True),
        ("whitelist", ps.Relation(subscription="both"), False),
        ("whitelist", ps.Relation(is_owner=True), True),
    ],
)
def test_access_models(model: str, relation: ps.Relation, allowed: bool) -> None:
    config = ps.NodeConfig(access_model=model, roster_groups_allowed=("Friends",))
    assert ps.may_access(config, relation) is allowed


def test_access_errors() -> None:
    assert ps.access_error(ps.NodeConfig()).app_condition == (
        NS_PUBSUB_ERRORS,
        "presence-subscription-required",
    )
    assert ps.access_error(ps.NodeConfig(access_model="whitelist")).condition == "not-allowed"


def test_payload_checks() -> None:
    item = etree.fromstring("<item xmlns='http://jabber.org/protocol/pubsub'><x xmlns='urn:x'/></item>")
    assert etree.QName(ps.check_payload(item, LIMITS)).localname == "x"
    big = etree.fromstring(
        f"<item xmlns='http://jabber.org/protocol/pubsub'><x xmlns='urn:x'>{'a' * 200}</x></item>"
    )
    with pytest.raises(StanzaError) as caught:
        ps.check_payload(big, LIMITS)
    assert (caught.value.condition, caught.value.app_condition) == (
        "not-acceptable", (NS_PUBSUB_ERRORS, "payload-too-big"))  # fmt: skip
    two = etree.fromstring(
        "<item xmlns='http://jabber.org/protocol/pubsub'><x xmlns='a'/><y xmlns='b'/></item>"
    )
    with pytest.raises(StanzaError):
        ps.check_payload(two, LIMITS)


def test_notify_nodes() -> None:
    features = ["urn:xmpp:avatar:metadata+notify", "http://jabber.org/protocol/caps", "x+notify"]
    assert ps.notify_nodes(features) == {"urn:xmpp:avatar:metadata", "x"}
