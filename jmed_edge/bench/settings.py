"""Benchmark settings, the summary a run produces, and the progress events it reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from jmed_edge.errors import ConfigError
from jmed_edge.prompts import LANGS, TEMPLATES

MODES = ("loglik", "generate")
SCORINGS = ("letter", "text", "text-norm")


@dataclass
class BenchSettings:
    """How questions are asked and scored. Fields in ``IDENTITY`` must match to resume a run."""

    mode: str = "loglik"  # loglik: score each option; generate: answer, then extract letters
    template: str = "medpalm"  # chat | medpalm | alpaca (jmed_edge.prompts)
    shots: int = 0  # few-shot examples from the benchmark's dev split
    langs: tuple[str, ...] = ()  # () = every language the benchmark has
    limit: int | None = None  # a seeded sample of this many questions (same ids in every language)
    seed: int = 0
    scoring: str = "letter"  # loglik pick: letter | text (sum) | text-norm (per token)
    max_new_tokens: int = 64  # generate mode
    skip_bad: bool = False  # skip (and count) unreadable records instead of failing
    batch_size: int = 8  # contexts per forward pass on runtimes that batch (torch)
    runtime_options: dict[str, Any] = field(default_factory=dict)  # device, n_threads, n_ctx, lora_path...

    IDENTITY = ("mode", "template", "shots", "langs", "limit", "seed", "scoring", "max_new_tokens")

    def validate(self) -> None:
        """Raise one ``ConfigError`` listing every problem."""
        problems = []
        if self.mode not in MODES:
            problems.append(f'mode "{self.mode}" (use {" or ".join(MODES)})')
        if self.template not in TEMPLATES:
            problems.append(f'template "{self.template}" (use {", ".join(TEMPLATES)})')
        if self.scoring not in SCORINGS:
            problems.append(f'scoring "{self.scoring}" (use {", ".join(SCORINGS)})')
        unknown = [lang for lang in self.langs if lang not in LANGS]
        if unknown:
            problems.append(f"language {', '.join(unknown)} (use {', '.join(LANGS)})")
        if self.shots < 0:
            problems.append(f"shots {self.shots} (use 0 or more)")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit {self.limit} (use 1 or more)")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            problems.append("max_new_tokens and batch_size must be at least 1")
        if problems:
            raise ConfigError("invalid bench settings: " + "; ".join(problems))

    def identity(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.IDENTITY}
        values["langs"] = list(self.langs)
        return values

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["langs"] = list(self.langs)
        return out


@dataclass
class BenchProgress:
    """Reported after every batch: enough for a progress bar with running accuracy."""

    artifact: str
    benchmark: str
    done: int
    total: int
    n_correct: int
    elapsed_s: float
    questions_per_second: float
    last_id: str = ""

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.done if self.done else 0.0


@dataclass
class Summary:
    """What ``summary.json`` holds (one artifact x one benchmark); see benchmarks/README.md."""

    artifact: str
    artifact_name: str
    benchmark: str
    benchmark_format: str
    benchmark_version: str
    benchmark_hash: str
    question_set_hash: str
    complete: bool
    n: int
    n_correct: int
    accuracy: float
    points: float
    points_possible: float
    points_score: float
    by_lang: dict[str, Any]
    by_rule: dict[str, int]
    skipped: dict[str, int]
    skipped_records: list[dict[str, str]]
    settings: dict[str, Any]
    runtime: dict[str, Any]
    timings: dict[str, Any]
    sha256: str
    size_bytes: int
    out_dir: str
    metrics: dict[str, Any] = field(default_factory=dict)  # generate mode: exact match, Gestalt
    # bench --until-decided: per language, the confidence sequence's record (bench.sequential)
    sequential: dict[str, Any] | None = None
    # records the loader repaired as it read them (a lone "," between answer letters), by file:line
    repaired: list[dict[str, str]] = field(default_factory=list)
    # GGUF/ONNX: per language, the scored questions whose ids differ from the HF source tokenizer's
    # (bench.tokenizer_check); None when there was no source tokenizer to compare with
    tokenizer_divergent_ids: dict[str, list[str]] | None = None
    tokenizer_check: dict[str, Any] | None = None  # the source, what was compared, or why not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
