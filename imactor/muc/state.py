"""What a multi-user chat room remembers between restarts: configuration, affiliations, subject.

Occupants are not here: they are live sessions, and a room re-activated after a restart starts
empty (its clients rejoin). Everything here is plain data with a JSON form (`RoomState.to_json`),
which storage keeps whole; `from_json` accepts documents written by older versions (missing keys
take their defaults, unknown keys are ignored), so a field can be added without a migration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

#: XEP-0045 §5.2 affiliations, highest first, and "none" (no affiliation stored).
AFFILIATIONS = ("owner", "admin", "member", "outcast")
AFFILIATION_RANK = {"owner": 4, "admin": 3, "member": 2, "none": 1, "outcast": 0}
#: XEP-0045 §5.1 roles.
ROLES = ("moderator", "participant", "visitor", "none")
#: muc#roomconfig_whois values: who may see occupants' real JIDs.
WHOIS = ("moderators", "anyone")
#: muc#roomconfig_allowpm values: who may send private messages (XEP-0045 §15.5.3).
ALLOW_PM = ("anyone", "participants", "moderators", "none")
#: The roles whose presence a room may broadcast (muc#roomconfig_presencebroadcast).
BROADCAST_ROLES = ("moderator", "participant", "visitor")


@dataclass
class RoomConfig:
    """The muc#roomconfig fields, with the defaults of XEP-0045 §10.1.3 (an instant room)."""

    name: str = ""
    description: str = ""
    lang: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""  #: "" means no password
    whois: str = "moderators"  #: "anyone": a non-anonymous room
    max_users: int | None = None  #: None: only the service's own limit
    history_length: int = 20  #: messages kept for new occupants (muc#maxhistoryfetch)
    allow_invites: bool = False  #: occupants (not only admins) may invite to a members-only room
    change_subject: bool = False  #: occupants (not only moderators) may change the subject
    allow_pm: str = "anyone"  #: who may send private messages to an occupant
    enable_logging: bool = True  #: the room's messages go to its archive (XEP-0313)
    allow_voice_requests: bool = True  #: visitors may ask for voice (XEP-0045 §7.13)
    #: unaffiliated users may register (§7.10), and so become members, in a members-only room
    allow_registration: bool = False
    #: the roles whose presence the other occupants see (muc#roomconfig_presencebroadcast)
    presence_broadcast: tuple[str, ...] = BROADCAST_ROLES

    @property
    def is_non_anonymous(self) -> bool:
        return self.whois == "anyone"


@dataclass
class Affiliation:
    """A long-lived association of a bare JID with the room (XEP-0045 §5.2)."""

    affiliation: str  #: owner, admin, member or outcast
    reason: str = ""
    nick: str = ""  #: a reserved nick (XEP-0045 §7.12), "" when none


@dataclass
class RoomState:
    """Configuration, affiliations and subject of a room that exists."""

    config: RoomConfig = field(default_factory=RoomConfig)
    #: bare JID (as a string) → its affiliation; "none" is never stored.
    affiliations: dict[str, Affiliation] = field(default_factory=dict)
    subject: str = ""
    subject_by: str = ""  #: the nick that set the subject ("" when unset or set by the service)
    subject_stamp: float = 0.0
    #: a new room that its owner has not configured yet: only owners may enter (XEP-0045 §10.1.1).
    locked: bool = False
    created: float = 0.0
    creator: str = ""  #: bare JID of the creator (for the service's rooms-per-user limits)

    def affiliation_of(self, bare_jid: str) -> str:
        found = self.affiliations.get(bare_jid)
        return found.affiliation if found is not None else "none"

    def set_affiliation(self, bare_jid: str, affiliation: str, reason: str = "") -> None:
        """Store `affiliation` ("none" removes the entry); a reserved nick survives a change
        other than a ban."""
        if affiliation == "none":
            self.affiliations.pop(bare_jid, None)
            return
        if affiliation not in AFFILIATIONS:
            raise ValueError(f"unknown affiliation {affiliation!r}")
        nick = self.affiliations[bare_jid].nick if bare_jid in self.affiliations else ""
        if affiliation == "outcast":
            nick = ""  # XEP-0045 §9.1: a ban frees the outcast's reserved nick
        self.affiliations[bare_jid] = Affiliation(affiliation, reason, nick)

    def with_affiliation(self, affiliation: str) -> list[str]:
        """The bare JIDs that hold `affiliation`, sorted."""
        return sorted(jid for jid, entry in self.affiliations.items() if entry.affiliation == affiliation)

    def nick_owner(self, nick: str) -> str | None:
        """The bare JID that reserved `nick`, if any."""
        for jid, entry in self.affiliations.items():
            if entry.nick and entry.nick == nick:
                return jid
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "config": asdict(self.config),
            "affiliations": {jid: asdict(entry) for jid, entry in sorted(self.affiliations.items())},
            "subject": self.subject,
            "subject_by": self.subject_by,
            "subject_stamp": self.subject_stamp,
            "locked": self.locked,
            "created": self.created,
            "creator": self.creator,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoomState:
        """Read what `to_json` wrote (missing keys take defaults, unknown keys are ignored).

        Raises:
            ValueError: a value has the wrong type (a damaged document).
        """
        config = _known(RoomConfig, data.get("config", {}))
        roles: Any = config.presence_broadcast
        if isinstance(roles, list):  # JSON has no tuples
            config.presence_broadcast = tuple(roles)
        affiliations: dict[str, Affiliation] = {}
        for jid, entry in dict(data.get("affiliations", {})).items():
            item = _known(Affiliation, entry)
            if item.affiliation not in AFFILIATIONS:
                raise ValueError(f"unknown affiliation {item.affiliation!r} for {jid}")
            affiliations[str(jid)] = item
        state = cls(
            config=config,
            affiliations=affiliations,
            subject=str(data.get("subject", "")),
            subject_by=str(data.get("subject_by", "")),
            subject_stamp=float(data.get("subject_stamp", 0.0)),
            locked=bool(data.get("locked", False)),
            created=float(data.get("created", 0.0)),
            creator=str(data.get("creator", "")),
        )
        _check_types(state.config)
        return state


_T = TypeVar("_T")


def _known(kind: type[_T], data: Any) -> _T:
    if not isinstance(data, dict):
        raise ValueError(f"{kind.__name__}: expected an object, got {type(data).__name__}")
    names = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    return kind(**{key: value for key, value in data.items() if key in names})


def _check_types(config: RoomConfig) -> None:
    for spec in fields(config):
        value = getattr(config, spec.name)
        if spec.name == "max_users":
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        elif isinstance(spec.default, bool):
            ok = isinstance(value, bool)
        elif spec.name == "presence_broadcast":
            ok = isinstance(value, tuple) and all(role in BROADCAST_ROLES for role in value)
        elif spec.name == "history_length":
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ValueError(f"room config {spec.name}: {value!r} has the wrong type")
