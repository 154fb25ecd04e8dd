"""The pubsub module's options: each wrong value is refused with its key named."""

from __future__ import annotations

import pytest

from imactor.modules.pubsub import Options
from imactor.server.modules import ModuleConfigError


def test_defaults() -> None:
    options = Options()
    assert (options.subdomain, options.creators, options.default_max_items) == ("pubsub", "local", 10)
    assert options.limits().max_items == 1000


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"subdomain": "pub.sub"}, "modules.pubsub.subdomain"),
        ({"subdomain": ""}, "modules.pubsub.subdomain"),
        ({"creators": "everybody"}, "modules.pubsub.creators"),
        ({"max_items": 0}, "modules.pubsub.max_items"),
        ({"max_item_bytes": "big"}, "modules.pubsub.max_item_bytes"),
        ({"max_nodes": -1}, "modules.pubsub.max_nodes"),
        ({"default_max_items": "3"}, "modules.pubsub.default_max_items"),
        ({"default_max_items": 20, "max_items": 10}, "modules.pubsub.default_max_items"),
    ],
)
def test_a_wrong_value_names_its_key(values: dict[str, object], key: str) -> None:
    with pytest.raises(ModuleConfigError, match=key.replace(".", r"\.")):
        Options(**values)  # type: ignore[arg-type]
