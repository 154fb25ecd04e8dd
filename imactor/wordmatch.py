"""Sensitive-word matching for the word filter (`imactor.modules.word_filter`): pure, no I/O.

Texts and words are compared after the same folding, so that look-alike spellings match:

- Unicode NFKC, which also maps full-width forms (``ＢＡＤ``, ``１２３``) and compatibility
  characters (ligatures, circled letters) to their plain forms, then case folding (``ß`` → ``ss``),
  then NFKC again (case folding may leave a string that is not normalised: UAX #15 NFKC_Casefold);
- only letters and digits count (Unicode categories L* and N*): spaces, punctuation, symbols,
  format characters (zero-width space U+200B, joiners, U+FEFF) and combining marks that do not
  compose are separators, and a word matches with any separators inserted between its characters
  (``b.a d``, ``敏 感 词``, ``敏\u200b感词``, ``b̶a̶d̶``).

Matching is substring matching, done by one Aho-Corasick automaton (pyahocorasick) over every word
of every list (fed UTF-8 bytes: `_bytewise`), so its cost grows with the text, not with the
number of words. One rule keeps it
from firing inside other words of scripts that separate words with spaces (the Scunthorpe problem:
``ass`` in ``class``, or ``sad`` across ``is a dog`` once separators are gone): where a match begins
or ends between two adjacent narrow letters or digits of the original text (no separator between
them), it is not a match. Wide characters (East Asian Width W or F after NFKC: Han, kana, Hangul)
need no such edge: Chinese has no spaces between words, and a word is found anywhere in a sentence.

Masking works on the original text: each match is mapped back from the folded text to the span of
original characters it came from, and every character of that span (separators inside it included)
becomes one ``*``, so ``b.a d`` becomes ``*****`` and the rest of the text keeps its characters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import ahocorasick

#: What a list does with a text that contains one of its words.
ACTIONS = ("mask", "reject", "alert")
#: The longest word accepted, in characters after folding (a word list entry is a word or a short
#: phrase; an enormous entry is a mistake, such as a whole file pasted on one line).
MAX_WORD_CHARS = 100
MASK = "*"


class BadWord(ValueError):
    """A word list entry that cannot be used (empty once folded, or too long)."""


@dataclass(frozen=True, slots=True)
class WordList:
    name: str
    scope: str  #: "server", "domain:<domain>" or "room:<room bare JID>"
    action: str  #: one of `ACTIONS`
    words: tuple[str, ...]  #: folded (`fold_word`)


@dataclass(frozen=True, slots=True)
class Hit:
    """One match, as a span of the original text."""

    start: int  #: index of the first original character of the match
    end: int  #: index after its last original character
    word: str  #: the folded word that matched
    list: str  #: the name of the list it is in
    scope: str  #: of the list it is in
    action: str  #: of the list it is in


class Folded:
    """A text folded for matching, with where each folded character came from.

    `starts[k]` is the index of the first original character of folded character k, `ends[k]`
    the index after its last one. Most texts fold character by character (no combining marks,
    nothing that folds to two characters): their folded form is one `str.translate`, and the map
    back is built only when a match needs it."""

    __slots__ = ("_ends", "_original", "_starts", "text")

    def __init__(self, text: str, original: str, starts: list[int] | None = None,
                 ends: list[int] | None = None) -> None:  # fmt: skip
        self.text = text
        self._original = original
        self._starts = starts
        self._ends = ends

    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            self._map()
        assert self._starts is not None
        return self._starts

    @property
    def ends(self) -> list[int]:
        if self._ends is None:
            self._map()
        assert self._ends is not None
        return self._ends

    def _map(self) -> None:
        """The fast path's map: every original character that is no separator, one for one."""
        table = _SIMPLE
        self._starts = [i for i, ch in enumerate(self._original) if table[ord(ch)]]
        self._ends = [i + 1 for i in self._starts]


@lru_cache(maxsize=8192)
def _fold_cluster(cluster: str) -> str:
    """NFKC_Casefold of one base character with its combining marks, letters and digits only."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", cluster).casefold())
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


#: Characters that fold alone to at most one character, by code point → that character ("" for a
#: separator): the `str.translate` table of the fast path. Learned as texts bring them.
_SIMPLE: dict[int, str] = {}
#: Characters that do not: combining marks (they fold with the character before them) and those
#: that fold to several characters (ß, ligatures). A text with one goes the slow way.
_COMPLEX: set[str] = set()
#: Bound on `_SIMPLE`: a text bringing more unknown characters than this goes the slow way.
_SIMPLE_LIMIT = 1 << 16


#: Every character in `_SIMPLE` or `_COMPLEX`.
_KNOWN: set[str] = set()


def _learn(chars: Iterable[str]) -> bool:
    """Classify new characters; False when the table is full (the caller folds slowly)."""
    for ch in chars:
        folded = _fold_cluster(ch)
        if unicodedata.category(ch)[0] == "M" or len(folded) > 1:
            _COMPLEX.add(ch)
        elif len(_SIMPLE) < _SIMPLE_LIMIT:
            _SIMPLE[ord(ch)] = folded
        else:
            return False
        _KNOWN.add(ch)
    return True


def fold(text: str) -> Folded:
    """Fold `text` for matching (module docstring), keeping the map back to the original."""
    chars = set(text)
    unknown = chars - _KNOWN  # set operations in C: this runs for every text checked
    if (not unknown or _learn(unknown)) and chars.isdisjoint(_COMPLEX):
        return Folded(text.translate(_SIMPLE), text)
    return _fold_slowly(text)


def _fold_slowly(text: str) -> Folded:
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        # A base character and the combining marks after it fold together (é as e + U+0301).
        while j < n and unicodedata.category(text[j])[0] == "M":
            j += 1
        for ch in _fold_cluster(text[i:j]):
            out.append(ch)
            starts.append(i)
            ends.append(j)
        i = j
    return Folded("".join(out), text, starts, ends)


def fold_word(word: str) -> str:
    """A word list entry as the matcher compares it.

    Raises:
        BadWord: nothing is left of it (it has no letter or digit), or it is too long.
    """
    folded = fold(word).text
    if not folded:
        raise BadWord(f"{word!r} has no letter or digit: it would match nothing")
    if len(folded) > MAX_WORD_CHARS:
        raise BadWord(f"a word of {len(folded)} characters is too long (at most {MAX_WORD_CHARS})")
    return folded


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


class Matcher:
    """Every word of every list in one automaton; built once, then only read (thread-safe)."""

    def __init__(self, lists: Sequence[WordList], version: int = 0) -> None:
        self.version = version
        self.lists = tuple(lists)
        self._automaton: ahocorasick.Automaton | None = None
        owners: dict[str, list[int]] = {}
        for index, word_list in enumerate(self.lists):
            for word in word_list.words:
                owners.setdefault(word, []).append(index)
        if owners:
            automaton = ahocorasick.Automaton()
            for word, indexes in owners.items():
                automaton.add_word(_bytewise(word), (word, tuple(indexes)))
            automaton.make_automaton()
            self._automaton = automaton
        self.words = len(owners)

    def scopes(self) -> frozenset[str]:
        return frozenset(word_list.scope for word_list in self.lists)

    def find(self, text: str, scopes: Collection[str]) -> list[Hit]:
        """The matches in `text` of the words of the lists of these scopes, in text order."""
        if self._automaton is None or not text or not any(wl.scope in scopes for wl in self.lists):
            return []
        folded = fold(text)
        hits: list[Hit] = []
        bytewise = _bytewise(folded.text)
        for last_byte, (word, indexes) in self._automaton.iter(bytewise):
            last = _char_index(bytewise, last_byte, folded.text)
            first = last - len(word) + 1
            if not _at_edges(folded, first, last):
                continue
            for index in indexes:
                word_list = self.lists[index]
                if word_list.scope in scopes:
                    hits.append(Hit(folded.starts[first], folded.ends[last], word, word_list.name,
                                    word_list.scope, word_list.action))  # fmt: skip
        hits.sort(key=lambda hit: (hit.start, hit.end))
        return hits


def _bytewise(text: str) -> str:
    """`text` as its UTF-8 bytes, one character per byte (Latin-1), for the automaton.

    pyahocorasick looks up a node's next character by scanning its children: fed Chinese words
    as characters, the root has thousands of children, and a text took 20 times longer to scan
    than fed their UTF-8 bytes (at most 256 children per node; Han characters share few lead
    bytes). UTF-8 is self-synchronising, so a word's bytes match only on character boundaries."""
    return text.encode("utf-8").decode("latin-1")


def _char_index(bytewise: str, byte_index: int, text: str) -> int:
    """The index in `text` of the character whose last byte is at `byte_index` of `bytewise`."""
    if len(bytewise) == len(text):  # ASCII: one byte per character
        return byte_index
    return len(bytewise[: byte_index + 1].encode("latin-1").decode("utf-8")) - 1


def _at_edges(folded: Folded, first: int, last: int) -> bool:
    """False when the match begins or ends inside a word of a spaced script (module docstring)."""
    return not (_joined(folded, first - 1, first) or _joined(folded, last, last + 1))


def _joined(folded: Folded, left: int, right: int) -> bool:
    """Folded characters `left` and `right` are narrow and adjacent in the original text: one word."""
    text = folded.text
    if left < 0 or right >= len(text) or folded.ends[left] < folded.starts[right]:
        return False  # an edge of the text, or a separator between them
    return not _wide(text[left]) and not _wide(text[right])


def mask(text: str, hits: Iterable[Hit]) -> str:
    """`text` with each hit's span of original characters replaced by one `MASK` per character."""
    masked = list(text)
    for hit in hits:
        masked[hit.start : hit.end] = MASK * (hit.end - hit.start)
    return "".join(masked)
