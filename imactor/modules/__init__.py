"""One XMPP feature per module; each file defines `module = Module(...)` (see server/modules.py)."""
