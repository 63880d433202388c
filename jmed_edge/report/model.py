"""The report's data: one row per artifact, one cell per artifact x benchmark x language."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from jmed_edge.report.stats import Interval, PairedComparison


def shared_prefix(names: list[str]) -> str:
    """The prefix every name shares, ending at a '-' (the separator artifact labels use; never
    inside a quant type such as Q4_K_M)."""
    if len(names) < 2:
        return ""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("-") + 1]
    return "" if any(n == prefix for n in names) else prefix


def short_names(names: list[str]) -> dict[str, str]:
    """Names without their shared prefix ("Qwen2-7B-jmed-Q4_K_M" -> "Q4_K_M"), for tables and plots."""
    cut = len(shared_prefix(names))
    return {n: n[cut:] for n in names}


@dataclass
class Cell:
    artifact: str
    benchmark: str
    lang: str
    n: int
    n_correct: int
    accuracy: float
    ci: Interval
    points: float | None = None  # points-weighted score (IgakuQA), fraction of points available
    vs_reference: PairedComparison | None = None
    generation: dict[str, float] = field(default_factory=dict)  # exact match, Gestalt metrics
    sequential: dict[str, Any] | None = None  # bench --until-decided: the stopping rule's record

    @property
    def loss_points(self) -> float | None:
        """Accuracy lost against the reference, in percentage points (positive = worse)."""
        return None if self.vs_reference is None else -100 * self.vs_reference.difference


@dataclass
class ArtifactRow:
    name: str
    format: str
    quant: str
    path: str
    sha256: str
    size_bytes: int
    peak_rss_bytes: int | None = None
    load_seconds: float | None = None
    prompt_tokens_per_second: float | None = None
    decode_tokens_per_second: float | None = None
    questions_per_second: float | None = None
    # per language: mean_kl, p99_kl, top1, perplexity (and the number of positions)
    kl: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ram_estimate_bytes(self) -> int:
        """Measured peak RSS when known, else file size plus a working-set margin."""
        return self.peak_rss_bytes or int(self.size_bytes * 1.2 + 256 * 1024**2)


@dataclass
class Recommendation:
    """``certified``: ``chosen`` is non-inferior (interval above -max_loss) on every benchmark and
    language. ``provisional``: nothing could be certified, ``chosen`` is the artifact closest to
    the reference by KL; ``questions_needed`` per benchmark/language would decide it."""

    chosen: str | None
    reason: str
    significant_losses: list[str]
    budget_bytes: int | None
    max_loss_points: float
    certified: bool = False
    provisional: bool = False
    questions_needed: int | None = None
    prefer: str = "smallest"
    decisions: dict[str, str] = field(
        default_factory=dict
    )  # artifact -> certified/inferior/undecided/reference


@dataclass
class ReportData:
    reference: str
    artifacts: list[ArtifactRow]
    cells: list[Cell]
    recommendation: Recommendation
    benchmarks: dict[str, dict[str, Any]]  # name -> question_set_hash, version, n per language
    settings: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)
    # Paired rows per IgakuQA category / MMLU subject: artifact, benchmark, lang, category, n,
    # delta, delta_ci, noninferior, p_value, right_to_wrong, wrong_to_right.
    by_category: list[dict[str, Any]] = field(default_factory=list)
    # IgakuQA as the exam scores it: one entry per artifact x exam x language (report.exam).
    exams: list[dict[str, Any]] = field(default_factory=list)
    # Contraindicated (kinki) answers a quantized artifact picked and its reference did not.
    new_kinki: list[dict[str, Any]] = field(default_factory=list)

    def cell(self, artifact: str, benchmark: str, lang: str) -> Cell | None:
        return next(
            (c for c in self.cells if (c.artifact, c.benchmark, c.lang) == (artifact, benchmark, lang)), None
        )

    def short_names(self) -> dict[str, str]:
        return short_names([a.name for a in self.artifacts])

    def common_name(self) -> str:
        """What every artifact name shares ("Qwen2-7B-jmed"), or "artifacts"."""
        return shared_prefix([a.name for a in self.artifacts]).rstrip("-") or "artifacts"

    def langs(self) -> list[str]:
        return sorted({c.lang for c in self.cells}, key=lambda lang: (lang != "ja", lang))

    def to_json(self) -> dict[str, Any]:
        """Everything but wall-clock measurements, which live under ``timings`` only."""
        data = asdict(self)
        for row in data["artifacts"]:
            for key in ("peak_rss_bytes", "load_seconds", "prompt_tokens_per_second",
                        "decode_tokens_per_second", "questions_per_second"):  # fmt: skip
                data["timings"].setdefault(row["name"], {})[key] = row.pop(key)
        return data
