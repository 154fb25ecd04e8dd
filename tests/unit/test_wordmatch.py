"""The word filter's matcher (`imactor.wordmatch`): folding, separators, edges, masking offsets."""

from __future__ import annotations

import pytest

from imactor.wordmatch import MAX_WORD_CHARS, BadWord, Matcher, WordList, fold, fold_word, mask

SCOPES = frozenset({"server", "room:lobby@conference.localhost"})


def matcher(*words: str, action: str = "mask", scope: str = "server", name: str = "test") -> Matcher:
    return Matcher([WordList(name, scope, action, tuple(fold_word(w) for w in words))])


def masked(m: Matcher, text: str, scopes: frozenset[str] = SCOPES) -> str:
    return mask(text, m.find(text, scopes))


@pytest.mark.parametrize(
    ("word", "folded"),
    [
        ("Bad", "bad"),
        ("ＢＡＤ", "bad"),  # full-width Latin (NFKC)
        ("Straße", "strasse"),  # case folding, not lower()
        ("ﬁne", "fine"),  # a ligature (NFKC)
        ("e\u0301te\u0301", "été"),  # decomposed accents compose (NFKC)
        ("敏 感\u200b词", "敏感词"),  # separators inside a word list entry go too
        ("①②", "12"),  # circled digits (NFKC)
    ],
)
def test_words_are_folded(word: str, folded: str) -> None:
    assert fold_word(word) == folded


@pytest.mark.parametrize("word", ["", "   ", "...", "\u200b", "*!?"])
def test_a_word_without_letters_or_digits_is_refused(word: str) -> None:
    with pytest.raises(BadWord, match="no letter or digit"):
        fold_word(word)


def test_an_enormous_word_is_refused() -> None:
    fold_word("x" * MAX_WORD_CHARS)
    with pytest.raises(BadWord, match="too long"):
        fold_word("x" * (MAX_WORD_CHARS + 1))


def test_folding_keeps_the_original_offsets() -> None:
    folded = fold("A ﬁ\u200bÉ")  # É as one code point; ﬁ expands to two folded characters
    assert folded.text == "afié"
    assert list(zip(folded.starts, folded.ends, strict=True)) == [(0, 1), (2, 3), (2, 3), (4, 5)]
    combining = fold("e\u0301x")
    assert combining.text == "éx"
    assert list(zip(combining.starts, combining.ends, strict=True)) == [(0, 2), (2, 3)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a bad day", "a *** day"),
        ("BAD!", "***!"),
        ("ＢＡＤ news", "*** news"),
        ("b.a d", "*****"),  # separators inside the span are masked with it
        ("b\u200ba\u200bd", "*****"),
        ("b\u0336a\u0336d\u0336 x", "****** x"),  # strike-through marks do not hide it
        ("这是敏感词吧", "这是***吧"),
        ("这是敏 感 词吧", "这是*****吧"),
        ("敏\u3000感．词", "*****"),
        ("bad and bad", "*** and ***"),
    ],
)
def test_masks_cover_the_original_characters(text: str, expected: str) -> None:
    m = matcher("bad", "敏感词")
    assert masked(m, text) == expected


@pytest.mark.parametrize("text", ["class", "badge", "abad", "is a dog", "Scunthorpe"])
def test_no_match_inside_a_word_of_a_spaced_script(text: str) -> None:
    m = matcher("ass", "bad", "sad", "cunt")
    assert m.find(text, SCOPES) == []


def test_wide_scripts_match_inside_a_sentence_and_next_to_latin() -> None:
    m = matcher("机密", "abc")
    assert masked(m, "这份机密文件") == "这份**文件"
    assert masked(m, "中abc文") == "中***文"  # a Han neighbour is no part of a Latin word


def test_overlapping_words_mask_their_union() -> None:
    m = matcher("敏感", "感词")
    assert masked(m, "是敏感词吗") == "是***吗"


def test_hits_carry_list_scope_and_action() -> None:
    m = Matcher([
        WordList("profanity", "server", "mask", ("darn",)),
        WordList("secrets", "room:lobby@conference.localhost", "reject", ("darn", "plan")),
    ])  # fmt: skip
    hits = m.find("darn plan", SCOPES)
    assert [(h.word, h.list, h.scope, h.action, h.start, h.end) for h in hits] == [
        ("darn", "profanity", "server", "mask", 0, 4),
        ("darn", "secrets", "room:lobby@conference.localhost", "reject", 0, 4),
        ("plan", "secrets", "room:lobby@conference.localhost", "reject", 5, 9),
    ]


def test_lists_of_other_scopes_do_not_apply() -> None:
    m = matcher("plan", scope="room:lobby@conference.localhost")
    assert m.find("the plan", frozenset({"server"})) == []
    assert len(m.find("the plan", SCOPES)) == 1


def test_an_empty_matcher_finds_nothing() -> None:
    m = Matcher([])
    assert m.words == 0
    assert m.find("anything at all", SCOPES) == []


def test_ten_thousand_words_in_one_automaton() -> None:
    words = tuple(f"w{i:05d}x" for i in range(10_000))
    m = Matcher([WordList("big", "server", "reject", words)])
    assert m.words == 10_000
    assert [hit.word for hit in m.find("say w09999x and w00000x", SCOPES)] == ["w09999x", "w00000x"]
