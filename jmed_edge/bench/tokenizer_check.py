"""Which scored questions does a GGUF or ONNX artifact tokenize differently from its HF source?

A question is *divergent* when any id the runtime feeds for it differs from what the Hugging
Face source tokenizer gives for the same text: the rendered prompt (tokenized with special
tokens, BOS as the runtimes add it), and each scored continuation as it is split off after that
prompt (``split_continuation``: the answer letters; the choice texts too when the scoring reads
them; none in generate mode). Those are exactly the ids whose log-likelihoods the bench sums, so
the check is precise, and it is cheap: tokenizing only, no forward pass (about 1 + choices
tokenizations per question on each side). Both sides tokenize the same rendered text (with the
``chat`` template, the artifact's own template): a template that renders differently is
``jmed-edge verify``'s chat check, not this one.

The source is the Hugging Face folder at the root of the artifact's manifest chain (as
``jmed-edge verify`` finds ``--against``). With no source on this machine the result is null
and says why; the bench never fails for it. Results are cached in the run folder
(``tokenizer_parity.json``) keyed by the artifact's sha256, the benchmark's content hash, the
prompt settings and the source, per question, so a rerun tokenizes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge.bench.prompting import letter_continuations, text_continuations
from jmed_edge.bench.records import Question
from jmed_edge.bench.settings import BenchSettings
from jmed_edge.fsutil import write_text_atomic
from jmed_edge.runtimes.base import split_continuation

log = logging.getLogger(__name__)

CACHE = "tokenizer_parity.json"
CHECKED_FORMATS = ("gguf", "onnx")  # artifacts whose tokenizer is not the source's own code
SOURCE_FORMATS = ("hf-safetensors", "peft-adapter")  # they run the source tokenizer: nothing diverges
COMPARED = "prompt and scored continuations, ids as the runtime feeds them, vs the HF source tokenizer"

NO_SOURCE = "no Hugging Face source: the artifact's manifest chain names none that is still on disk"

Tokenize = Callable[[str], list[int]]


@dataclass
class TokenizerCheck:
    """What ``summary.json`` records: divergent question ids per language, or None (unknown)."""

    divergent: dict[str, list[str]] | None
    source: str | None = None
    reason: str | None = None  # why there is no result, or why it is trivially empty
    checked: int = 0
    cached: int = 0
    seconds: float = 0.0

    def scored(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]] | None:
        """Divergent ids among the questions actually scored, per language (every language listed)."""
        if self.divergent is None:
            return None
        divergent = {lang: set(ids) for lang, ids in self.divergent.items()}
        out: dict[str, list[str]] = {lang: [] for lang in dict.fromkeys(str(r["lang"]) for r in rows)}
        for r in rows:
            if str(r["id"]) in divergent.get(str(r["lang"]), ()):
                out[str(r["lang"])].append(str(r["id"]))
        return {lang: sorted(ids) for lang, ids in out.items()}

    def record(self) -> dict[str, Any]:
        """The ``tokenizer_check`` entry of ``summary.json``: how the ids were obtained."""
        return {"source": self.source, "compared": COMPARED, "reason": self.reason, "questions": self.checked,
                "from_cache": self.cached, "seconds": round(self.seconds, 3)}  # fmt: skip


def question_ids(tokenize: Tokenize, prompt: str, continuations: Sequence[str]) -> list[list[int]]:
    """The prompt's ids, then each continuation's ids as split off after it."""
    ctx = tokenize(prompt)
    return [ctx, *(split_continuation(tokenize, ctx, prompt, c) for c in continuations)]


def continuations_for(q: Question, prompt: str, settings: BenchSettings) -> list[str]:
    """The continuations ``score_loglik`` scores for ``q`` (none in generate mode)."""
    if settings.mode != "loglik":
        return []
    conts = letter_continuations(prompt, q)
    return conts + text_continuations(prompt, q) if settings.scoring != "letter" else conts


def divergent_questions(
    items: Sequence[Question], render: Callable[[Question], str], settings: BenchSettings,
    artifact_tokenize: Tokenize, source_tokenize: Tokenize,
) -> dict[str, list[str]]:  # fmt: skip
    """Ids per language of the questions whose ids differ anywhere between the two tokenizers."""
    out: dict[str, list[str]] = {}
    for q in items:
        prompt = render(q)
        conts = continuations_for(q, prompt, settings)
        same = question_ids(artifact_tokenize, prompt, conts) == question_ids(source_tokenize, prompt, conts)
        ids = out.setdefault(q.lang, [])
        if not same:
            ids.append(q.id)
    return out


def cache_key(
    artifact_sha256: str, benchmark_hash: str, settings: BenchSettings, source: Path
) -> dict[str, Any]:
    return {"artifact_sha256": artifact_sha256, "benchmark_hash": benchmark_hash, "mode": settings.mode,
            "template": settings.template, "shots": settings.shots, "scoring": settings.scoring,
            "source_tokenizer_sha256": tokenizer_files_sha256(source)}  # fmt: skip


# The files a Hugging Face tokenizer is read from: the cache follows their content, so a tokenizer
# edited in place (or the same one moved) is judged by what it is, not where it lies.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")  # fmt: skip


def tokenizer_files_sha256(source: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        path = Path(source) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _read_cache(folder: Path, key: dict[str, Any]) -> dict[str, Any]:
    """Per-language {"checked": [...], "divergent": [...]} of a cache made under ``key``, else empty."""
    try:
        data = json.loads((folder / CACHE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data.get("by_lang", {}) if data.get("key") == key else {}


def _write_cache(folder: Path, key: dict[str, Any], by_lang: dict[str, Any]) -> None:
    payload = {"key": key, "compared": COMPARED, "by_lang": by_lang}
    write_text_atomic(folder / CACHE, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")


def load_tokenizer(src: Path) -> tuple[Any, str | None]:
    """The source's Hugging Face tokenizer, or why it cannot be read (never raises)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(src), None
    except Exception as exc:  # a source folder without a readable tokenizer: recorded, never fatal
        return None, f"the source {src} has no readable tokenizer ({type(exc).__name__}: {exc})"


def check_artifact(
    info: Any, run_folder: Path, items: Sequence[Question], settings: BenchSettings, artifact_sha256: str,
    benchmark_hash: str, open_runtime: Callable[[], tuple[Any, bool]],
    render: Callable[[Any, Question], str],
) -> TokenizerCheck:  # fmt: skip
    """Run (or read from ``run_folder``'s cache) the check for ``items`` of one artifact x benchmark.

    ``open_runtime`` returns the runtime whose ``tokenize`` the bench uses and whether the caller
    owns it (closed here then); it is called only when some question is not cached.
    ``render(runtime, question)`` is the prompt as the bench renders it.
    """
    if info.format in SOURCE_FORMATS:
        reason = f"a {info.format} artifact runs the Hugging Face tokenizer itself"
        empty: dict[str, list[str]] = {lang: [] for lang in dict.fromkeys(q.lang for q in items)}
        return TokenizerCheck(empty, reason=reason, checked=len(items))
    if info.format not in CHECKED_FORMATS:
        return TokenizerCheck(None, reason=f"not checked for {info.format} artifacts")
    from jmed_edge.convert.verify import _hf_tokenize, source_of

    started = time.perf_counter()
    src = source_of(info.folder)
    if src is None:
        log.warning("tokenizer check skipped for %s: %s", info.path, NO_SOURCE)
        return TokenizerCheck(None, None, NO_SOURCE)
    key = cache_key(artifact_sha256, benchmark_hash, settings, src)
    by_lang = _read_cache(run_folder, key)
    done = {(lang, qid) for lang, entry in by_lang.items() for qid in entry.get("checked", [])}
    todo = [q for q in items if (q.lang, q.id) not in done]
    if todo:  # the tokenizer and the runtime are loaded only when something is not cached
        tok, reason = load_tokenizer(src)
        if tok is None:
            log.warning("tokenizer check skipped for %s: %s", info.path, reason)
            return TokenizerCheck(None, str(src), reason)
        runtime, owned = open_runtime()
        try:
            found = divergent_questions(
                todo, lambda q: render(runtime, q), settings,
                lambda t: list(runtime.tokenize(t, add_special=True)), lambda t: _hf_tokenize(tok, t, True),
            )  # fmt: skip
        finally:
            if owned:
                runtime.close()
        for q in todo:
            entry = by_lang.setdefault(q.lang, {"checked": [], "divergent": []})
            entry["checked"].append(q.id)
        for lang, ids in found.items():
            by_lang[lang]["divergent"].extend(ids)
        _write_cache(run_folder, key, by_lang)
    divergent = {lang: sorted(set(entry.get("divergent", []))) for lang, entry in by_lang.items()}
    result = TokenizerCheck(divergent, str(src), None, checked=len(items), cached=len(items) - len(todo),
                            seconds=time.perf_counter() - started)  # fmt: skip
    n = sum(len(v) for v in divergent.values())
    if n:
        log.info("%s: %d of %d questions tokenize differently from %s", info.path, n, len(items), src)
    return result


def note(summary: Any) -> str | None:
    """One line for the bench's output when questions diverge or the check could not run, else None."""
    ids, check = summary.tokenizer_divergent_ids, summary.tokenizer_check or {}
    where = f"{summary.artifact_name} / {summary.benchmark}"
    if ids is None:
        return f"{where}: tokenizer not compared with the source ({check.get('reason')})"
    counts = {lang: len(v) for lang, v in ids.items() if v}
    if not counts:
        return None
    per = ", ".join(f"{n} {lang}" for lang, n in counts.items())
    return (
        f"{where}: {per} scored questions tokenize differently from {check.get('source')}; "
        "the report shows the accuracy difference without them"
    )
