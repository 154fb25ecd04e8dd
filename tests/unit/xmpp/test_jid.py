"""JID parsing and preparation (RFC 7622), pure and deterministic."""

from __future__ import annotations

import copy
import pickle
import random

import pytest
from precis_i18n import get_profile

from imactor.xmpp.jid import (
    JID,
    InvalidJID,
    prep_domainpart,
    prep_localpart,
    prep_password,
    prep_resource,
)

# RFC 7622 §3.5, Table 1: valid JIDs, with the parts they split into.
RFC7622_VALID = [
    ("juliet@example.com", "juliet", "example.com", None),  # 1: a "bare JID"
    ("juliet@example.com/foo", "juliet", "example.com", "foo"),  # 2: a "full JID"
    ("juliet@example.com/foo bar", "juliet", "example.com", "foo bar"),  # 3: space in resourcepart
    ("juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar"),  # 4: "@" in resourcepart
    ("foo\\20bar@example.com", "foo\\20bar", "example.com", None),  # 5: space escaped per XEP-0106
    ("fussball@example.com", "fussball", "example.com", None),  # 6
    ("fu\u00dfball@example.com", "fu\u00dfball", "example.com", None),  # 7: sharp s is kept
    ("\u03c0@example.com", "\u03c0", "example.com", None),  # 8: GREEK SMALL LETTER PI
    ("\u03c3\u03c3\u03c3@example.com", "\u03c3\u03c3\u03c3", "example.com", None),  # 10: small sigma
    ("\u03c2\u03c2\u03c2@example.com", "\u03c2\u03c2\u03c2", "example.com", None),  # 11: final sigma
    ("king@example.com/\u265a", "king", "example.com", "\u265a"),  # 12: BLACK CHESS KING resource
    ("example.com", None, "example.com", None),  # 13: a domainpart
    ("example.com/foobar", None, "example.com", "foobar"),  # 14: domainpart and resourcepart
    ("a.example.com/b@example.net", None, "a.example.com", "b@example.net"),  # 15
    # Example 18 ("juliet@example.com/ foo") was listed as invalid, but verified erratum 4560 removed
    # it: OpaqueString allows a leading space.
    ("juliet@example.com/ foo", "juliet", "example.com", " foo"),
]

# RFC 7622 §3.5, Table 2: invalid JIDs (example 18 excepted, see above).
RFC7622_INVALID = [
    '"juliet"@example.com',  # 16: quotation marks in localpart
    "foo bar@example.com",  # 17: space in localpart
    "@example.com/",  # 19: zero-length localpart and resourcepart
    "henry\u2163@example.com",  # 20: ROMAN NUMERAL FOUR (compatibility character)
    "\u265a@example.com",  # 21: BLACK CHESS KING as localpart
    "juliet@",  # 22: localpart without domainpart
    "/foobar",  # 23: resourcepart without domainpart
]


@pytest.mark.parametrize(("text", "localpart", "domainpart", "resourcepart"), RFC7622_VALID)
def test_rfc7622_valid_examples(
    text: str, localpart: str | None, domainpart: str, resourcepart: str | None
) -> None:
    jid = JID.parse(text)
    assert (jid.localpart, jid.domainpart, jid.resourcepart) == (localpart, domainpart, resourcepart)
    assert str(jid) == text
    assert JID.parse(str(jid)) == jid


@pytest.mark.parametrize("text", RFC7622_INVALID)
def test_rfc7622_invalid_examples(text: str) -> None:
    with pytest.raises(InvalidJID):
        JID.parse(text)


def test_capital_sigma_is_lowercased_with_the_final_sigma_rule() -> None:
    # RFC 7622 example 9. Unicode toLowerCase (which RFC 8265 names) has the Final_Sigma context rule,
    # so the last capital sigma becomes a final sigma: not the same address as example 10.
    jid = JID.parse("\u03a3\u03a3\u03a3@example.com")
    assert jid.localpart == "\u03c3\u03c3\u03c2"
    assert jid != JID.parse("\u03c3\u03c3\u03c3@example.com")


def test_case_mapping_keeps_resource_case() -> None:
    jid = JID.parse("Juliet@Example.COM/Balcony")
    assert str(jid) == "juliet@example.com/Balcony"
    assert jid == JID.parse("juliet@example.com/Balcony")
    assert jid != JID.parse("juliet@example.com/balcony")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a@b/c/d", ("a", "b", "c/d")),  # the resource starts at the first "/"
        ("b/c@d", (None, "b", "c@d")),  # an "@" after the first "/" is in the resource
        ("a@b/@", ("a", "b", "@")),
        ("example.com//", (None, "example.com", "/")),
    ],
)
def test_split_rules(text: str, expected: tuple[str | None, str, str | None]) -> None:
    jid = JID.parse(text)
    assert (jid.localpart, jid.domainpart, jid.resourcepart) == expected
    assert JID.parse(str(jid)) == jid


@pytest.mark.parametrize(
    "text",
    ["", "@example.com", "example.com/", "a@b@example.com", "a@", "@", "/", "a@/r", "a@example.com/"],
)
def test_structurally_invalid(text: str) -> None:
    with pytest.raises(InvalidJID):
        JID.parse(text)


@pytest.mark.parametrize("char", list("\"&'/:<>@"))
def test_localpart_exclusions(char: str) -> None:
    # RFC 7622 §3.3.1; UsernameCaseMapped alone would allow these ASCII characters.
    with pytest.raises(InvalidJID):
        prep_localpart(f"a{char}b")
    with pytest.raises(InvalidJID):
        JID.make(f"a{char}b", "example.com")


@pytest.mark.parametrize(
    "char", ["\uff02", "\uff06", "\uff07", "\uff0f", "\uff1a", "\uff1c", "\uff1e", "\uff20"]
)
def test_localpart_exclusions_apply_after_width_mapping(char: str) -> None:
    # Fullwidth forms map to the excluded ASCII characters, so they are excluded too.
    with pytest.raises(InvalidJID):
        prep_localpart(f"a{char}b")


def test_localpart_width_mapping_and_normalization() -> None:
    assert prep_localpart("\uff26\uff2f\uff2f") == "foo"  # fullwidth FOO
    assert prep_localpart("E\u0301") == "\u00e9"  # NFC after lower-casing
    assert JID.make("e\u0301", "example.com") == JID.parse("\u00e9@example.com")


@pytest.mark.parametrize("text", ["a\tb", "a\u0000", "\u200b", "a\u00adb", "\ue000"])
def test_localpart_disallowed_code_points(text: str) -> None:
    with pytest.raises(InvalidJID):
        prep_localpart(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\uff32", "\uff32"),  # OpaqueString keeps fullwidth forms
        ("\u2163", "\u2163"),  # and compatibility characters
        ("A\u00a0B", "A B"),  # but maps non-ASCII spaces to U+0020
        ("Re\u0301s", "R\u00e9s"),  # and normalizes to NFC
        ("a@b/c", "a@b/c"),
    ],
)
def test_resource_preparation(text: str, expected: str) -> None:
    assert prep_resource(text) == expected
    assert JID.parse(f"example.com/{text}").resourcepart == expected


@pytest.mark.parametrize("text", ["\u0000", "a\tb", "\u007f", "\u0085", "\ue000"])
def test_resource_disallowed_code_points(text: str) -> None:
    with pytest.raises(InvalidJID):
        prep_resource(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("EXAMPLE.COM", "example.com"),
        ("example.com.", "example.com"),  # RFC 7622 §3.2: a trailing dot is stripped
        ("XN--BCHER-KVA.example", "b\u00fccher.example"),  # A-labels become U-labels
        ("BU\u0308CHER.example", "b\u00fccher.example"),  # lower-cased, then NFC
        ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\u3002com", "example.com"),  # width, ideographic dot
        ("fa\u00df.de", "fa\u00df.de"),  # IDNA2008, not transitional: sharp s stays
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[2001:0DB8:0:0:0:0:0:1]", "[2001:db8::1]"),  # IPv6 literals in canonical form
        ("[::1]", "[::1]"),
        ("a-b.example", "a-b.example"),
        ("1.2.3.\u00b2", "1.2.3.2"),  # mapped to a dotted quad: an IPv4 address (fuzzing, jid)
        ("10\u30020.0.1", "10.0.0.1"),
    ],
)
def test_domainpart_preparation(text: str, expected: str) -> None:
    assert prep_domainpart(text) == expected
    assert JID.parse(text).domainpart == expected
    assert JID.parse(text) == JID.parse(expected)


@pytest.mark.parametrize(
    "text",
    [
        "a..b",
        ".example",
        "example..",
        "-a.example",
        "a-.example",
        "ab--cd.example",  # hyphens in positions 3 and 4 outside an A-label
        "xn--abc-.example",
        "_xmpp.example",
        "a b.example",
        "example.com:5222",
        "a" * 64 + ".example",  # label over 63 octets
        ".".join(["a" * 63] * 4),  # name over 253 octets
        "\U0001f600.example",
        "a\u00b7b.example",  # CONTEXTO rule for MIDDLE DOT
        "\u05d0\u05d1a.example",  # bidi rule
        "999.1.1.1",
        "1.2.07.\u00b27",  # maps to 1.2.07.27, no IPv4 address: it parsed, and its string did not
        "[::1",
        "[not-an-address]",
        "[fe80::1%eth0]",  # no zone identifiers
        "a@b",
        "a/b",
    ],
)
def test_domainpart_invalid(text: str) -> None:
    with pytest.raises(InvalidJID):
        prep_domainpart(text)


def test_ascii_domain_fast_path_agrees_with_idna() -> None:
    # Deterministic random LDH names: the regex shortcut must give what the idna path gives.
    import idna

    rng = random.Random(7622)
    alphabet = "abcXYZ019-"
    for _ in range(2000):
        labels = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(3)]
        name = ".".join(labels)
        try:
            via_idna: str | None = idna.decode(idna.encode(idna.uts46_remap(name, std3_rules=True)))
        except idna.IDNAError:
            via_idna = None
        try:
            ours: str | None = prep_domainpart(name)
        except InvalidJID:
            ours = None
        assert ours == via_idna, name


def test_ascii_fast_paths_agree_with_precis() -> None:
    username = get_profile("UsernameCaseMapped")
    opaque = get_profile("OpaqueString")
    rng = random.Random(8265)
    samples = [chr(c) for c in range(0x20, 0x7F)]
    samples += ["".join(rng.choice(samples) for _ in range(rng.randint(1, 12))) for _ in range(2000)]
    for text in samples:
        try:
            expected: str | None = username.enforce(text)
        except UnicodeError:
            expected = None
        if expected is not None and any(c in "\"&'/:<>@" for c in expected):
            expected = None
        try:
            got: str | None = prep_localpart(text)
        except InvalidJID:
            got = None
        assert got == expected, text
        assert prep_resource(text) == opaque.enforce(text)


def test_part_length_limits() -> None:
    assert len(JID.make("a" * 1023, "example.com").localpart or "") == 1023
    with pytest.raises(InvalidJID):
        JID.make("a" * 1024, "example.com")
    # The limit is in octets of UTF-8 after preparation, not in code points.
    assert JID.make("\u00e9" * 511, "example.com").localpart == "\u00e9" * 511
    with pytest.raises(InvalidJID):
        JID.make("\u00e9" * 512, "example.com")
    assert JID.parse("example.com/" + "r" * 1023).resourcepart == "r" * 1023
    with pytest.raises(InvalidJID):
        JID.parse("example.com/" + "r" * 1024)
    with pytest.raises(InvalidJID):
        JID.parse("example.com/" + "\U0001f600" * 256)  # 1024 octets
    with pytest.raises(InvalidJID):
        prep_resource("")
    with pytest.raises(InvalidJID):
        prep_localpart("")


def test_long_jids_parse_the_same_as_short_ones() -> None:
    # Inputs above the cache threshold take the uncached path; results must not differ.
    text = "Juliet@Example.com/" + "R" * 1000
    jid = JID.parse(text)
    assert str(jid) == "juliet@example.com/" + "R" * 1000
    assert JID.parse(str(jid)) == jid
    assert prep_localpart("A" * 300) == "a" * 300
    assert prep_domainpart("EXAMPLE." * 30 + "com") == "example." * 30 + "com"


def test_make_prepares_each_part() -> None:
    jid = JID.make("Juliet", "EXAMPLE.com.", "Balcony")
    assert (jid.localpart, jid.domainpart, jid.resourcepart) == ("juliet", "example.com", "Balcony")
    assert jid == JID.parse("juliet@example.com/Balcony")
    assert JID("Juliet", "EXAMPLE.com") == JID.parse("juliet@example.com")
    with pytest.raises(InvalidJID):
        JID.make("", "example.com")
    with pytest.raises(InvalidJID):
        JID.make(None, "example.com", "")


def test_bare_full_and_domain() -> None:
    full = JID.parse("juliet@example.com/balcony")
    assert not full.is_bare
    assert not full.is_domain
    assert full.bare == JID.parse("juliet@example.com")
    assert full.bare.is_bare
    bare = JID.parse("juliet@example.com")
    assert bare.bare is bare
    assert JID.parse("example.com").is_domain
    assert not JID.parse("example.com/r").is_domain
    assert not bare.is_domain
    assert JID.parse("example.com/r").bare == JID.parse("example.com")


def test_with_resource() -> None:
    jid = JID.parse("juliet@example.com/balcony").with_resource("Orchard\u00a0Wall")
    assert str(jid) == "juliet@example.com/Orchard Wall"
    with pytest.raises(InvalidJID):
        jid.with_resource("")


def test_equality_and_hashing() -> None:
    a = JID.parse("Juliet@EXAMPLE.com/r")
    b = JID.make("juliet", "example.com", "r")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, JID.parse("juliet@example.com")}) == 2
    assert a != "juliet@example.com/r"  # never equal to a plain string
    assert JID.parse("example.com/juliet") != JID.parse("juliet@example.com")


def test_immutable() -> None:
    jid = JID.parse("juliet@example.com")
    with pytest.raises(AttributeError):
        jid.localpart = "romeo"
    with pytest.raises(AttributeError):
        del jid.domainpart
    with pytest.raises(AttributeError):
        jid.extra = 1
    assert str(jid) == "juliet@example.com"


def test_repr_str_copy_and_pickle() -> None:
    jid = JID.parse("juliet@example.com/balcony")
    assert repr(jid) == "JID('juliet@example.com/balcony')"
    assert copy.copy(jid) is jid
    assert copy.deepcopy(jid) is jid
    restored = pickle.loads(pickle.dumps(jid))
    assert restored == jid
    assert restored.resourcepart == "balcony"


def test_parse_is_cached() -> None:
    text = "cached-user@example.com/cached"
    assert JID.parse(text) is JID.parse(text)


def test_prep_password() -> None:
    assert prep_password("correct horse") == "correct horse"
    assert prep_password("p\u00e4ss\u00a0word") == "p\u00e4ss word"  # non-ASCII space mapped
    assert prep_password("Pa\u0308ss") == "P\u00e4ss"  # NFC
    with pytest.raises(ValueError, match="password"):
        prep_password("")
    for bad in ("secret\u0000x", "secret\tx"):
        with pytest.raises(ValueError, match="password") as info:
            prep_password(bad)
        assert "secret" not in str(info.value)  # the password is never echoed
