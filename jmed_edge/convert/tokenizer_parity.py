"""Do the Hugging Face tokenizer and a GGUF's llama.cpp tokenizer give the same ids on real text?

A divergent tokenization changes the log-likelihood of exactly the questions it touches, so
part of a measured "quantization loss" can be conversion loss. This module compares the two
tokenizers on any list of texts (the shipped stress set, or every question and choice of a
user's benchmark), names the first differing pieces from both sides, groups the divergent
strings by the pattern at the point of divergence, and, where the cause is the pre-tokenizer
the converter chose, tries every pre-tokenizer llama.cpp's converter knows on a vocabulary-only
copy of the GGUF and reports the best. It never switches one silently.
"""

from __future__ import annotations

import ctypes
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jmed_edge.convert.ggufinfo import KEY_PRE, read_gguf, write_vocab_only

Tokenize = Callable[[str], list[int]]

_CIRCLED = "\u2460-\u24ff\u2776-\u2793\u3251-\u325f\u32b1-\u32bf\u3200-\u321e\u3220-\u3229"
# What the text looks like where the ids first differ; the first pattern that matches names it.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("space + circled number", re.compile(rf"[ \u3000][{_CIRCLED}]")),
    ("newline run + digit", re.compile(r"\n{2,}\d")),
    ("newline run", re.compile(r"\n{2,}")),
    ("circled or parenthesised number", re.compile(rf"[{_CIRCLED}]")),
    ("space run", re.compile(r"[ \u3000]{2,}")),
    ("tab", re.compile(r"\t")),
    ("full-width letter or digit", re.compile(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")),
    ("half-width katakana", re.compile(r"[\uff61-\uff9f]")),
    ("super/subscript", re.compile(r"[\u00b2\u00b3\u00b9\u2070-\u209f]")),
    ("Greek letter", re.compile(r"[\u0370-\u03ff]")),
    ("digit run", re.compile(r"\d{2,}")),
    ("punctuation", re.compile(r"[\u3000-\u303f\uff01-\uff0f\uff1a-\uff20!-/:-@\[-`{-~]")),
)
WINDOW = 3  # characters either side of the divergence that the patterns look at


@dataclass(frozen=True)
class Divergence:
    text: str
    lang: str | None
    token: int  # index of the first differing id
    hf: tuple[str, ...]  # pieces from there on, each side
    llama: tuple[str, ...]
    pattern: str

    def describe(self) -> str:
        hf, ll = " ".join(map(repr, self.hf)), " ".join(map(repr, self.llama))
        return f"{self.text[:40]!r}: HF {hf} vs llama.cpp {ll}"


@dataclass
class ParityReport:
    total: int = 0
    identical: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    by_lang: dict[str, list[int]] = field(default_factory=dict)  # lang -> [identical, total]

    @property
    def by_pattern(self) -> Counter[str]:
        return Counter(d.pattern for d in self.divergences)

    def summary(self, examples: int = 2) -> str:
        if not self.divergences:
            return f"{self.identical}/{self.total} strings give identical ids"
        groups = ", ".join(f"{name}: {n}" for name, n in self.by_pattern.most_common())
        shown = "; ".join(d.describe() for d in self.divergences[:examples])
        share = 1 - self.identical / self.total
        return f"{self.identical}/{self.total} identical ({share:.1%} differ; {groups}); first: {shown}"

    def to_dict(self, examples: int = 5) -> dict[str, Any]:
        return {
            "strings": self.total,
            "identical": self.identical,
            "by_pattern": dict(self.by_pattern.most_common()),
            "by_lang": {lang: {"identical": a, "strings": n} for lang, (a, n) in self.by_lang.items()},
            "first": [
                {
                    "text": d.text,
                    "lang": d.lang,
                    "token": d.token,
                    "hf": list(d.hf),
                    "llama_cpp": list(d.llama),
                    "pattern": d.pattern,
                }
                for d in self.divergences[:examples]
            ],
        }


def classify(text: str, char_at: int) -> str:
    window = text[max(0, char_at - WINDOW) : char_at + WINDOW + 1]
    return next((name for name, pattern in PATTERNS if pattern.search(window)), "other")


def compare(
    texts: Iterable[tuple[str | None, str]],
    hf_tokenize: Tokenize,
    llama_tokenize: Tokenize,
    pieces: Callable[[Sequence[int]], list[str]],
    decode: Callable[[Sequence[int]], str],
) -> ParityReport:
    """Tokenize each ``(lang, text)`` both ways; record where and how the first difference looks."""
    report = ParityReport()
    seen: set[str] = set()
    for lang, text in texts:
        if text in seen:  # a choice shared by many questions counts once
            continue
        seen.add(text)
        a, b = hf_tokenize(text), llama_tokenize(text)
        counts = report.by_lang.setdefault(lang or "-", [0, 0])
        report.total += 1
        counts[1] += 1
        if a == b:
            report.identical += 1
            counts[0] += 1
            continue
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        char_at = len(decode(a[:at]).rstrip("\ufffd"))  # a partial UTF-8 character decodes to U+FFFD
        report.divergences.append(
            Divergence(
                text,
                lang,
                at,
                tuple(pieces(a[at : at + 4])),
                tuple(pieces(b[at : at + 4])),
                classify(text, char_at),
            )
        )
    return report


def hf_side(
    tok: Any,
) -> tuple[Tokenize, Callable[[Sequence[int]], list[str]], Callable[[Sequence[int]], str]]:
    """tokenize, pieces and decode of a Hugging Face tokenizer, without special tokens."""
    return (
        lambda text: list(tok(text, add_special_tokens=False)["input_ids"]),
        lambda ids: list(tok.convert_ids_to_tokens(list(ids))),
        lambda ids: tok.decode(list(ids)),
    )


# --- another pre-tokenizer? -------------------------------------------------------------------


def known_pre_tokenizers(converter: Path) -> list[str]:
    """Every pre-tokenizer name llama.cpp's converter can write (its ``res = "..."`` table)."""
    names = {"default"}
    for source in [converter / "convert_hf_to_gguf.py", *sorted((converter / "conversion").glob("*.py"))]:
        if source.is_file():
            names.update(re.findall(r'res = "([A-Za-z0-9._-]+)"', source.read_text(encoding="utf-8")))
    return sorted(names)


class VocabTokenizer:
    """llama.cpp's tokenizer from a vocabulary-only GGUF: no weights, no context."""

    def __init__(self, path: Path) -> None:
        import llama_cpp
        from llama_cpp._logger import set_verbose
        from llama_cpp._utils import suppress_stdout_stderr

        set_verbose(False)  # llama.cpp's load log goes nowhere, as for the runtimes
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._lib = llama_cpp
        with suppress_stdout_stderr():  # vocab loaders print notices straight to the C stderr
            self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ValueError(f"llama.cpp cannot load the vocabulary of {path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

    def __call__(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        buf = (self._lib.llama_token * cap)()
        n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, cap, False, False)
        if n < 0:
            cap = -n
            buf = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, cap, False, False)
        return list(buf[:n])

    def close(self) -> None:
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = ctypes.c_void_p()


@dataclass(frozen=True)
class PreTokenizerTrial:
    chosen: str | None
    chosen_identical: int
    best: str | None  # None when no candidate does better than the chosen one
    best_identical: int
    total: int
    tried: int
    equally_good: tuple[str, ...] = ()  # other candidates with the best score

    def describe(self) -> str:
        if self.best is None:
            return (
                f"no other of the {self.tried} pre-tokenizers llama.cpp knows does better than "
                f"{self.chosen!r} ({self.chosen_identical}/{self.total}): llama.cpp's own splitting of "
                "these strings differs from the Hugging Face tokenizer's, so conversion cannot remove it"
            )
        fixed = "removes every divergence" if self.best_identical == self.total else "does better"
        also = f" (so do {', '.join(self.equally_good)})" if self.equally_good else ""
        return (
            f"pre-tokenizer {self.best!r} {fixed}{also} ({self.best_identical}/{self.total} identical, "
            f"{self.chosen!r} gives {self.chosen_identical}): re-convert with --pre-tokenizer {self.best}"
        )


def try_pre_tokenizers(
    gguf: Path, texts: Sequence[str], hf_tokenize: Tokenize, candidates: Sequence[str]
) -> PreTokenizerTrial:
    """Score each candidate pre-tokenizer on ``texts`` (identical strings), on metadata-only copies."""
    chosen = read_gguf(gguf).get(KEY_PRE)
    expected = [hf_tokenize(t) for t in texts]
    scores: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="jmed-pre-") as work:
        for name in dict.fromkeys([chosen or "default", *candidates]):
            copy = write_vocab_only(gguf, Path(work) / f"{name}.gguf", {KEY_PRE: name})
            try:
                tokenizer = VocabTokenizer(copy)
            except ValueError:  # a name this llama.cpp build does not know
                continue
            try:
                scores[name] = sum(tokenizer(t) == e for t, e in zip(texts, expected, strict=True))
            finally:
                tokenizer.close()
    base = scores.get(chosen or "default", 0)
    top = max(scores.values(), default=0)
    ties = sorted(n for n, v in scores.items() if v == top)
    better = top > base
    best = ties[0] if better else None
    return PreTokenizerTrial(chosen, base, best, top if better else base, len(texts), len(scores),
                             tuple(ties[1:]) if better else ())  # fmt: skip
