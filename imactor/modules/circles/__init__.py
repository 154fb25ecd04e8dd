"""Circles: a feed per department and per chat group, on the publish-subscribe service
(XEP-0060 nodes at ``pubsub.<domain>`` with XEP-0277 microblog payloads; docs/circles.md).

Members post short updates (Atom entries), comment on them (XEP-0277 comments nodes) and like
them (XEP-0470 attachments); each post, comment and like is an item of a node of the ``pubsub``
service, so any client that shows a XEP-0277 microblog on a pubsub node shows a circle. The node
names are in `nodes`; who may read, publish and is notified is the circle's membership, read
from its source at each request (`members`): the directory for a department, the room's
affiliations for a chat group. The pubsub module hands every request about a circle node to
`feed`, which answers it as XEP-0060 says a whitelist node whose publishers are its members
answers, plus paging (XEP-0059, newest first).

Nodes are created on first use (the first post, comment or like) with the circle's fixed
configuration: nobody creates, configures or deletes them by hand (owner requests: `forbidden`;
creating a circle's name: `not-allowed`). A department's or room's nodes stay when it goes away
(readable again if it comes back); a retracted post takes its comments and likes with it.

Notifications go to every member, from the service, with the payload: posts and comments as
``normal`` messages (`pubsub#notification_type`), which a member without an available resource
gets from offline storage at the next login (XEP-0160, within `[limits] max_offline_messages`);
likes as ``headline``, for those online only: a like is not worth a place in an offline store
that chat messages share, and the post's like node holds it for any client that shows likes.

Options (`[modules.circles]`): `departments` and `rooms` (which circles exist), `max_posts`
(posts a feed keeps, and comments a post keeps), `max_entry_bytes` (largest post or comment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from imactor.server.modules import EnabledModule, Module, ModuleConfigError, Xep

KEY = "modules.circles"


@dataclass(frozen=True)
class Options:
    departments: bool = True  #: a circle per department of the directory
    rooms: bool = True  #: a circle per persistent members-only room
    max_posts: int = 1000  #: posts a feed keeps (the oldest go), and comments a post keeps
    max_entry_bytes: int = 8192  #: largest post or comment (the Atom entry, serialized)

    def __post_init__(self) -> None:
        for name in ("max_posts", "max_entry_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModuleConfigError(f"{KEY}.{name}: expected a positive integer, got {value!r}")


module = Module(
    name="circles", summary="Circles: department and chat group feeds",
    xeps=(Xep("0059", "1.0", "partial: paging of a circle's items, newest first "
                             "(max, after, before, without index)"),
          Xep("0277", "0.6.5", "partial: posts and comments of the circles (a department's or chat group's "
                               "feed on pubsub.<domain>), with server-stamped authors and links"),
          Xep("0470", "0.2.0", "partial: likes (<noticed/>) of circle posts in attachment nodes, "
                               "without the summary node"),
          Xep("0472", "0.2.1", "partial: circle feeds carry pubsub#type urn:xmpp:microblog:0")),
    options=Options,
    depends=("pubsub", "directory"),
)  # fmt: skip


def enabled(modules: Sequence[EnabledModule]) -> bool:
    return any(loaded.name == module.name for loaded in modules)


def options_of(raw: Mapping[str, Mapping[str, object]]) -> Options:
    """The module's options from the config's ``[modules.*]`` tables (checked when the worker
    loaded the module): the pubsub module, which runs the requests, holds its own options only."""
    return Options(**raw.get(module.name, {}))  # type: ignore[arg-type]
