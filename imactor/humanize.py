"""Figures as people read them, for `imactor status` and the admin console."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``5m 12s``, ``42s``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def size(count: int) -> str:
    """Bytes in binary units: ``812 B``, ``48.1 MiB``."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"
