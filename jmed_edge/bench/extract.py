"""Find the answer letters (or number) in a generated response.

Responses come in many shapes: "c", "C.", "(c) CHADS2", "答えはc", "答え：a、d", "「b」",
full-width "ｃ", "a, c", "a and c", "The answer is (B).". Text is NFKC-normalised first (so
full-width letters, digits and punctuation become ASCII), then read in order of certainty:

1. after an explicit marker ("答え", "正解", "解答", "answer", "option", "choice");
2. a response made only of letters and separators ("a, c", "b と d");
3. a letter that opens the response, followed by punctuation or non-Latin text ("c. ...");
4. letters inside brackets or quotes anywhere ("「b」", "(c)").

English words ("a patient", "I think") are never read as letters. What cannot be read gives
an empty list, which scores as wrong.
"""

from __future__ import annotations

import re
import unicodedata

from jmed_edge.bench.records import LETTERS

# Separators between letters: commas (ASCII and Japanese), "and", "と", "及び", "・", spaces.
_SEP = r"(?:\s*(?:,|、|と|及び|および|・|/|and|&|\s)\s*)"
_LETTER = r"[a-zA-Z]"
_LIST = rf"{_LETTER}(?:{_SEP}{_LETTER})*"
_MARKER = re.compile(
    rf"(?:答え|正解|解答|回答|answer|option|choice)s?\s*(?:は|が|:|is|are|=|＝)?\s*[(\[「『\"']?\s*({_LIST})(?![a-zA-Z])",
    re.IGNORECASE,
)
_ONLY_LETTERS = re.compile(rf"^[\s(\[「『\"'*]*({_LIST})[\s)\]」』\"'.。*]*$")
_LEADING = re.compile(rf"^[\s*]*[(\[「『]?({_LIST})(?:[)\]」』.。:、,]|\s+(?![a-zA-Z])|$)")
_BRACKETED = re.compile(rf"[(\[「『\"']\s*({_LETTER})\s*[)\]」』\"']")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _letters(found: str, n_choices: int) -> list[str]:
    letters = [c.lower() for c in re.findall(rf"(?<![a-zA-Z]){_LETTER}(?![a-zA-Z])", found)]
    valid = LETTERS[:n_choices]
    return sorted({c for c in letters if c in valid})


def extract_letters(response: str, n_choices: int) -> list[str]:
    """Sorted distinct answer letters found in ``response``; letters beyond the choices are ignored."""
    text = normalize(response).strip()
    if not text:
        return []
    first_line = text.splitlines()[0]
    for pattern, scope in ((_MARKER, text), (_ONLY_LETTERS, first_line), (_LEADING, text)):
        match = pattern.search(scope)
        if match:
            found = _letters(match.group(1), n_choices)
            if found:
                return found
    bracketed = sorted({c for c in (m.lower() for m in _BRACKETED.findall(text)) if c in LETTERS[:n_choices]})
    return bracketed


def extract_number(response: str) -> str | None:
    """The first number in the response ("325 mL", "３２５", "答え：325") as a normalised string."""
    match = _NUMBER.search(normalize(response).replace(",", ""))
    return normalize_number(match.group(0)) if match else None


def normalize_number(text: str) -> str:
    """ "0325" -> "325", "3.50" -> "3.5", "325.0" -> "325": equal numbers compare equal as text."""
    text = normalize(text).strip().replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else repr(value)
