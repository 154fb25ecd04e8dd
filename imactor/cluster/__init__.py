"""Between worker processes: the frame codec (`wire`, sans-IO) and the ZeroMQ link (`zmq_link`).

`imactor.cluster.wire` imports neither trio nor zmq, so importing it (or this package) never loads
ZeroMQ; only `imactor.cluster.zmq_link` does (STYLE §12 rule 2). The frame layout is documented in
``docs/wire-format.md``.
"""

from __future__ import annotations
