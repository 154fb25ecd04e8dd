"""The room configuration form (XEP-0045 §10.2, FORM_TYPE muc#roomconfig) and the room info
form of disco#info (§6.4, FORM_TYPE muc#roominfo, an XEP-0128 extension).

`config_form` builds what an owner fetches; `apply_submission` reads what the owner submits
into a new `RoomConfig` (fields left out keep their values) plus the owner and admin lists when
the form carries them. Errors are `StanzaError`s: a value of the wrong type (a boolean that is not
one, an integer that is not one, an unknown list option, a bad JID) is `bad-request`; a value of
the right type that the room cannot accept (a password-protected room without a password, more
users than the service allows, no owner left) is `not-acceptable`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from imactor.muc.state import ALLOW_PM, BROADCAST_ROLES, WHOIS, RoomConfig
from imactor.xmpp import dataforms
from imactor.xmpp.dataforms import Field, FormError, SubmittedForm, boolean_value
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_MUC_ROOMCONFIG, NS_MUC_ROOMINFO
from imactor.xmpp.stanza import Element

_P = "muc#roomconfig_"
#: Offered choices of muc#roomconfig_maxusers; a submitted number need not be one of them.
MAX_USERS_CHOICES = ("10", "20", "30", "50", "100", "none")
#: Upper bound of muc#maxhistoryfetch (the room keeps that many messages in memory).
MAX_HISTORY = 200
#: Not a field of XEP-0045's registry (the XEP leaves who may register to the service), hence
#: the x- prefix of XEP-0068 §4.
REGISTRATION = "x-muc#roomconfig_registration"


@dataclass(frozen=True)
class Submission:
    config: RoomConfig
    owners: tuple[str, ...] | None  #: bare JIDs, when muc#roomconfig_roomowners was submitted
    admins: tuple[str, ...] | None


def config_form(parent: Element, config: RoomConfig, owners: list[str], admins: list[str],
                max_occupants: int) -> Element:  # fmt: skip
    """Append the configuration form of a room with `config` to `parent`."""

    def boolean(var: str, label: str, value: bool) -> Field:
        return Field(_P + var, "boolean", label, values=(boolean_value(value),))

    choices = [c for c in MAX_USERS_CHOICES if c == "none" or int(c) <= max_occupants]
    fields = [
        Field(_P + "roomname", "text-single", "Name", values=(config.name,)),
        Field(_P + "roomdesc", "text-single", "Description", values=(config.description,)),
        Field(_P + "lang", "text-single", "Language", values=(config.lang,)),
        boolean("persistentroom", "Persistent (kept when empty)", config.persistent),
        boolean("publicroom", "Listed in the room directory", config.public),
        boolean("membersonly", "Members only", config.members_only),
        boolean("moderatedroom", "Moderated (only participants speak)", config.moderated),
        boolean("passwordprotectedroom", "Password protected", bool(config.password)),
        Field(_P + "roomsecret", "text-private", "Password", values=(config.password,)),
        Field(
            _P + "whois",
            "list-single",
            "Who may see real JIDs",
            values=(config.whois,),
            options=(("Moderators", "moderators"), ("Anyone", "anyone")),
        ),
        Field(
            _P + "maxusers",
            "list-single",
            "Maximum occupants",
            values=(str(config.max_users) if config.max_users is not None else "none",),
            options=tuple((c, c) for c in choices),
        ),
        Field(
            "muc#maxhistoryfetch",
            "text-single",
            "Messages of history for newcomers",
            values=(str(config.history_length),),
        ),
        boolean("allowinvites", "Occupants may invite to a members-only room", config.allow_invites),
        boolean("changesubject", "Occupants may change the subject", config.change_subject),
        Field(
            _P + "allowpm",
            "list-single",
            "Who may send private messages",
            values=(config.allow_pm,),
            options=tuple((v.capitalize(), v) for v in ALLOW_PM),
        ),
        boolean("enablelogging", "Archive messages", config.enable_logging),
        boolean("allowvoicerequests", "Visitors may request voice", config.allow_voice_requests),
        Field(
            _P + "presencebroadcast",
            "list-multi",
            "Roles whose presence is broadcast",
            values=config.presence_broadcast,
            options=tuple((v.capitalize(), v) for v in BROADCAST_ROLES),
        ),
        Field(
            REGISTRATION,
            "boolean",
            "Anyone may register, and so become a member, in a members-only room",
            values=(boolean_value(config.allow_registration),),
        ),
        Field(_P + "roomowners", "jid-multi", "Owners", values=tuple(owners)),
        Field(_P + "roomadmins", "jid-multi", "Admins", values=tuple(admins)),
    ]
    return dataforms.build(parent, "form", fields, namespace=NS_MUC_ROOMCONFIG, title="Room configuration")


def apply_submission(form: SubmittedForm, current: RoomConfig, max_occupants: int) -> Submission:
    """Read a submitted configuration form.

    Raises:
        StanzaError: `bad-request` for a wrong FORM_TYPE or a value of the wrong type,
            `not-acceptable` for a value the room cannot take.
    """
    if form.form_type not in (None, NS_MUC_ROOMCONFIG):
        raise StanzaError("bad-request", "FORM_TYPE is not muc#roomconfig")
    try:
        return _read(form, current, max_occupants)
    except FormError as exc:
        raise StanzaError("bad-request", str(exc)) from None


def _read(form: SubmittedForm, current: RoomConfig, max_occupants: int) -> Submission:
    def flag(var: str, now: bool) -> bool:
        value = form.boolean(_P + var, now)
        assert value is not None
        return value

    def text(var: str, now: str) -> str:
        value = form.text(var, now)
        assert value is not None
        return value

    password = text(_P + "roomsecret", current.password)
    if not flag("passwordprotectedroom", bool(current.password)):
        password = ""
    elif not password:
        raise StanzaError("not-acceptable", "a password-protected room needs a password")
    max_users = current.max_users
    if _P + "maxusers" in form:
        max_users = form.integer(_P + "maxusers", None, minimum=1)
    if max_users is not None and max_users > max_occupants:
        raise StanzaError("not-acceptable", f"at most {max_occupants} occupants")
    history = form.integer("muc#maxhistoryfetch", current.history_length, minimum=0)
    assert history is not None
    config = dataclasses.replace(
        current,
        name=text(_P + "roomname", current.name),
        description=text(_P + "roomdesc", current.description),
        lang=text(_P + "lang", current.lang),
        persistent=flag("persistentroom", current.persistent),
        public=flag("publicroom", current.public),
        members_only=flag("membersonly", current.members_only),
        moderated=flag("moderatedroom", current.moderated),
        password=password,
        whois=_choice(form, _P + "whois", WHOIS, current.whois),
        max_users=max_users,
        history_length=min(history, MAX_HISTORY),
        allow_invites=flag("allowinvites", current.allow_invites),
        change_subject=flag("changesubject", current.change_subject),
        allow_pm=_choice(form, _P + "allowpm", ALLOW_PM, current.allow_pm),
        enable_logging=flag("enablelogging", current.enable_logging),
        allow_voice_requests=flag("allowvoicerequests", current.allow_voice_requests),
        allow_registration=_boolean(form, REGISTRATION, current.allow_registration),
        presence_broadcast=_roles(form, current.presence_broadcast),
    )
    owners = _jids(form, _P + "roomowners")
    if owners is not None and not owners:
        raise StanzaError("not-acceptable", "a room needs an owner")
    return Submission(config, owners, _jids(form, _P + "roomadmins"))


def _boolean(form: SubmittedForm, var: str, now: bool) -> bool:
    value = form.boolean(var, now)
    assert value is not None
    return value


def _roles(form: SubmittedForm, now: tuple[str, ...]) -> tuple[str, ...]:
    """muc#roomconfig_presencebroadcast: any of the roles, in their canonical order."""
    var = _P + "presencebroadcast"
    if var not in form:
        return now
    wanted = {value.strip() for value in form.texts(var) if value.strip()}
    unknown = sorted(wanted - set(BROADCAST_ROLES))
    if unknown:
        raise FormError(f"field {var!r}: {', '.join(unknown)} is not one of {', '.join(BROADCAST_ROLES)}")
    return tuple(role for role in BROADCAST_ROLES if role in wanted)


def _choice(form: SubmittedForm, var: str, options: tuple[str, ...], now: str) -> str:
    value = form.choice(var, options, now)
    assert value is not None
    return value


def _jids(form: SubmittedForm, var: str) -> tuple[str, ...] | None:
    if var not in form:
        return None
    found: list[str] = []
    for value in form.texts(var):
        if not value.strip():
            continue
        try:
            jid = JID.parse(value.strip())
        except InvalidJID:
            raise FormError(f"field {var!r}: {value!r} is not a JID") from None
        if str(jid.bare) not in found:
            found.append(str(jid.bare))
    return tuple(found)


def room_info_form(parent: Element, config: RoomConfig, subject: str, occupants: int) -> Element:
    """Append the muc#roominfo form (XEP-0045 §6.4) that disco#info on a room carries."""
    fields = [
        Field("muc#roominfo_description", label="Description", values=(config.description,)),
        Field("muc#roominfo_subject", label="Subject", values=(subject,)),
        Field("muc#roominfo_occupants", label="Number of occupants", values=(str(occupants),)),
        Field("muc#roomconfig_roomname", label="Name", values=(config.name,)),
        Field("muc#roominfo_lang", label="Language", values=(config.lang,)),
        Field(
            "muc#roominfo_changesubject",
            "boolean",
            "Occupants may change the subject",
            values=(boolean_value(config.change_subject),),
        ),
        Field("muc#maxhistoryfetch", label="Messages of history", values=(str(config.history_length),)),
    ]
    if config.max_users is not None:
        fields.append(
            Field("muc#roominfo_maxusers", label="Maximum occupants", values=(str(config.max_users),))
        )
    return dataforms.build(parent, "result", fields, namespace=NS_MUC_ROOMINFO)
