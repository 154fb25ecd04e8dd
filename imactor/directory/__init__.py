"""The company directory, pure: the organisation model (`org`) and its import files (`files`).

Below storage (which keeps it) and the `directory` module (which serves it); above the protocol
core, whose JID preparation it uses. No I/O: the CLI reads the files, storage the rows.
"""
