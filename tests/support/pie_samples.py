"""The XEP-0227 exports of real peers (tests/data/xep0227/, made by
scripts/make_xep0227_samples.py) and the passwords their users typed on the old server."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "xep0227"
PROSODY_FILES = sorted((SAMPLES / "prosody").glob("*.xml"))
#: ejabberd writes a main file that includes one file per host (named with an underscore).
EJABBERD_MAIN = next(p for p in (SAMPLES / "ejabberd").glob("*.xml") if "_" not in p.name)
PASSWORDS = {"alice": "Wonderland-1865", "bob": "builder!Bob", "carol": "c@rol's secret"}
