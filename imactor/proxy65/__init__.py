"""XEP-0065 SOCKS5 Bytestreams proxy: the service JID (`service.py`) and the SOCKS5 relay
(`relay.py`), which one worker of each node runs (ARCHITECTURE.md, "File transfer")."""
