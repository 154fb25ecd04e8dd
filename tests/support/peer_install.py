"""Install a real peer server (Debian's Prosody or ejabberd) for the tests that need one.

The interop tests must run wherever the suite runs, CI's fresh machine included, so a missing
peer is installed by the project's own script rather than skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-peers.sh"
BINARIES = {"prosody": "prosody", "ejabberd": "ejabberdctl"}


def ensure_peer(peer: str) -> str:
    """The path of `peer`'s program, after installing its packages when it is missing (apt-get,
    as root; a few tens of seconds on a fresh machine, nothing when it is there)."""
    binary = BINARIES[peer]
    found = shutil.which(binary)
    if found is None:
        subprocess.run(["sh", str(SCRIPT), peer], check=True, timeout=1200)
        found = shutil.which(binary)
    assert found is not None, f"scripts/install-peers.sh {peer} did not install {binary}"
    return found
