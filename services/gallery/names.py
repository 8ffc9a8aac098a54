"""What a gallery name may be: the one rule, checked before any photo is read or any model loads.

A name becomes Redis keys (`{prefix}:emb:{name}`), a folder of `enroll-all`, a field of every identity
event and a word in logs, so it is refused at the door when it could be misread as a path, a key
pattern, a shell word, a flag or a second line. A name is accepted when:

  - it has 1 to 128 characters once in Unicode NFC form (it is normalized: macOS writes folder names
    decomposed, and "José" must be one person whichever way it was typed);
  - every character is a letter or combining mark of any script, a decimal digit, a space, or one of
    _ - . , ' ’ · ・  ("José_Núñez", "李小龍", "Zoë O'Brien", "Jean-Luc Picard", "Martin Luther King Jr.");
  - it starts with a letter or a digit (not ".", "..", a hidden folder or "-rf") and has no leading or
    trailing whitespace.

Everything else is refused, with the reason: path separators (/ \\), control and invisible characters
(newline, tab, zero-width and bidirectional marks, non-breaking spaces), glob and Redis key-pattern
specials (* ? [ ] { } and the key separator :), shell specials ($ ` ; & | < > ( ) ! " # ~ % ^ = + @)
and other symbols. `gallery remove` takes any name, so that people enrolled before this rule can go.
"""
from __future__ import annotations

import unicodedata

MAX_LENGTH = 128
PUNCTUATION = " _-.,'’·・"


class InvalidName(ValueError):
    """`invalid name '...': why`, on one line whatever the name holds."""

    def __init__(self, name: str, why: str):
        super().__init__(f"invalid name {shown(name)}: {why}")
        self.name, self.why = name, why


def shown(name: str, limit: int = 60) -> str:
    """The name quoted for a one-line message: invisible characters escaped (\\n, \\t, \\u200b), long names cut."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return f"'{text if len(text) <= limit else text[:limit] + '...'}'"


def check_name(name: str) -> str:
    """The name in NFC form, or InvalidName with the first reason it breaks the rule above."""
    if not name:
        raise InvalidName(name, "empty")
    nfc = unicodedata.normalize("NFC", name)
    if len(nfc) > MAX_LENGTH:
        raise InvalidName(name, f"{len(nfc)} characters, at most {MAX_LENGTH}")
    if nfc != nfc.strip():
        raise InvalidName(name, "leading or trailing whitespace")
    for c in nfc:
        if c in "/\\":
            raise InvalidName(name, f"{c!r} is a path separator")
        if not c.isprintable() or unicodedata.category(c)[0] in "CZ" and c != " ":
            raise InvalidName(name, f"control or invisible character U+{ord(c):04X}")
        if not _allowed(c):
            raise InvalidName(name, f"{c!r} is not allowed: names become Redis keys and file names "
                                    f"(letters, digits, spaces and {' '.join(PUNCTUATION.strip())} only)")
    if not (unicodedata.category(nfc[0])[0] == "L" or unicodedata.category(nfc[0]) == "Nd"):
        raise InvalidName(name, "must start with a letter or a digit")
    return nfc


def _allowed(c: str) -> bool:
    cat = unicodedata.category(c)
    return cat[0] in "LM" or cat == "Nd" or c in PUNCTUATION
