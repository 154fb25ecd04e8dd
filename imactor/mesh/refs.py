"""References to actors of other workers, and the stand-ins that answer across the mesh.

A `RemoteRef` turns sends into frames for the actor's worker; a `GoneRef` names a local session
that has ended (every send says so); `RemoteReply` and `RemoteCompletion` stand, on the worker
that handles a message, for the reply slot or the XEP-0198 completion of its sender on another
worker: answering them sends a frame back.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from imactor import messages as m
from imactor.actors import ActorAddress, ActorGone, Reply
from imactor.cluster.wire import ActorMessage
from imactor.mesh import codec

__all__ = ["FrameSender", "GatedRef", "GoneRef", "RemoteCompletion", "RemoteRef", "RemoteReply"]

M = TypeVar("M")


class FrameSender(Protocol):
    """What the references need of the mesh: to send messages and frames to other workers."""

    async def send(self, address: ActorAddress, message: object) -> None: ...

    def send_nowait(self, address: ActorAddress, message: object) -> None: ...

    def send_frame(self, worker: int, frame: ActorMessage) -> None: ...


class RemoteRef(Generic[M]):
    """A reference to an actor on another worker of the node: sends become frames."""

    __slots__ = ("_address", "_mesh")

    def __init__(self, address: ActorAddress, mesh: FrameSender) -> None:
        self._address = address
        self._mesh = mesh

    @property
    def address(self) -> ActorAddress:
        return self._address

    async def send(self, message: M) -> None:
        await self._mesh.send(self._address, message)

    def send_nowait(self, message: M) -> None:
        self._mesh.send_nowait(self._address, message)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteRef | GoneRef) and other.address == self._address

    def __hash__(self) -> int:
        return hash(self._address)

    def __repr__(self) -> str:
        return f"<RemoteRef {self._address}>"


class LocalDelivery(Protocol):
    """What a `GatedRef` needs of the mesh: a hosted actor's messages, through the gate."""

    def deliver_here(self, kind: str, key: str, message: object) -> None: ...


class GatedRef(Generic[M]):
    """A hosted actor of this worker whose previous home may still be handing it over: sends go
    through the mesh's `HandOffGate` (held until the hand-over, in order), never waiting."""

    __slots__ = ("_address", "_mesh")

    def __init__(self, address: ActorAddress, mesh: LocalDelivery) -> None:
        self._address = address
        self._mesh = mesh

    @property
    def address(self) -> ActorAddress:
        return self._address

    async def send(self, message: M) -> None:
        self._mesh.deliver_here(self._address.kind, self._address.key, message)

    def send_nowait(self, message: M) -> None:
        self._mesh.deliver_here(self._address.kind, self._address.key, message)

    def __repr__(self) -> str:
        return f"<GatedRef {self._address}>"


class GoneRef(Generic[M]):
    """A local session that has ended, named in a frame: every send says so."""

    __slots__ = ("_address",)

    def __init__(self, address: ActorAddress) -> None:
        self._address = address

    @property
    def address(self) -> ActorAddress:
        return self._address

    async def send(self, message: M) -> None:
        raise ActorGone(str(self._address))

    def send_nowait(self, message: M) -> None:
        raise ActorGone(str(self._address))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoneRef | RemoteRef) and other.address == self._address

    def __hash__(self) -> int:
        return hash(self._address)


class RemoteReply(Reply[Any]):
    """The reply slot of an `ask` made on another worker: the answer goes back as a frame."""

    __slots__ = ("_id", "_mesh", "_worker")

    def __init__(self, mesh: FrameSender, worker: int, reply_id: str) -> None:
        self._mesh, self._worker, self._id = mesh, worker, reply_id
        self._done = False

    def _put(self, item: tuple[bool, Any]) -> None:
        if self._done:
            return
        self._done = True
        _ok, value = item
        body_kind, body = codec.encode_reply(value)
        self._mesh.send_frame(self._worker, ActorMessage(codec.REPLY, self._id, body_kind, body))


class RemoteCompletion(m.Completion):
    """The completion of a message routed from another worker: `done` sends a frame back."""

    __slots__ = ("_id", "_mesh", "_worker")

    def __init__(self, mesh: FrameSender, worker: int, completion_id: str, key: str = "") -> None:
        super().__init__(key=key)
        self._mesh, self._worker, self._id = mesh, worker, completion_id

    def done(self) -> None:
        if not self.is_done:
            super().done()
            self._mesh.send_frame(self._worker, ActorMessage(codec.COMPLETION, self._id, "Done", b""))
