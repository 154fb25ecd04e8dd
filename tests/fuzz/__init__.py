"""Coverage-guided fuzzing of the parsers that face the network (docs/hardening.md).

`python -m tests.fuzz TARGET --seconds N` runs one target under atheris (libFuzzer);
`tests/fuzz/test_fuzz.py` runs every target briefly in the test suite. This package's
`__init__` imports nothing from imactor: `__main__` must instrument imactor before it loads.
"""
