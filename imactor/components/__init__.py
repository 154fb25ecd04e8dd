"""External components (XEP-0114): their listener, their streams, and routing to them across
the node's workers. The protocol itself is sans-IO in `imactor.xmpp.component`."""
