"""What the console reaches of the node (`NodeAccess`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imactor.config import Config
from imactor.storage import Storage


@dataclass
class NodeAccess:
    """What the console reaches of the node: its config, its storage, the status document (as
    ``imactor status`` shows it) and the status socket's commands (by ``command`` name)."""

    config: Config
    storage: Storage
    document: Callable[[], Awaitable[dict[str, Any]]]
    commands: Mapping[str, Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]] = field(
        default_factory=dict
    )

    async def command(self, name: str, **arguments: Any) -> Mapping[str, Any]:
        """Run a status socket command (forwarded to the workers); its answer."""
        return await self.commands[name]({"command": name, **arguments})
