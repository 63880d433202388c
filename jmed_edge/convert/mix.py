"""Budget-driven mixed-precision GGUF: the most faithful per-tensor types that fit a size.

    measure  each tensor group's KL increment per candidate type (``mix_probe``), ja and en
    weigh    the languages as the user asks (``--lang-weight ja=0.5,en=0.5``)
    choose   the options minimising the predicted KL under the budget (``mix_plan.choose``)
    quantize once, with llama.cpp's quantizer, the imatrix and the chosen per-tensor types
    check    the real size against the budget and the real KL against the prediction

The chosen types are written beside the GGUF as ``tensor-types.txt`` in llama-quantize's
``--tensor-type-file`` format: ``llama-quantize --imatrix IMATRIX --tensor-type-file
tensor-types.txt F16.gguf OUT.gguf Q8_0`` rebuilds the same file byte for byte.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jmed_edge.convert import mix_probe
from jmed_edge.convert.ggufinfo import read_gguf
from jmed_edge.convert.mix_plan import (
    DEFAULT_CANDIDATES,
    NEEDS_IMATRIX,
    Tensor,
    choose,
    group_options,
    parse_candidates,
    tensor_groups,
    tensor_nbytes,
    tensor_type_file,
)
from jmed_edge.convert.mix_ram import DEFAULT_CONTEXT, file_budget
from jmed_edge.convert.progress import Progress
from jmed_edge.convert.quant_types import quant_type
from jmed_edge.convert.quantize import quantize_gguf
from jmed_edge.errors import ConfigError
from jmed_edge.fsutil import human_bytes, parse_bytes

log = logging.getLogger(__name__)

TYPES_FILE = "tensor-types.txt"
# Metadata the quantizer adds to the F16's (file type, imatrix keys): measured 256 bytes on the
# 135M default; the budget check keeps 4 KB for it.
METADATA_MARGIN = 4096
DEFAULT_BANDS = 2  # layer bands per role; more bands = finer types, proportionally more probes
DEFAULT_WEIGHTS = {"ja": 0.5, "en": 0.5}
# KL that arithmetic order alone moves: llama.cpp's spread over batch sizes and threads, 6.2e-6
# (benchmarks/numerics/spread.py), x3. Increments all below it cannot rank the types.
KL_RESOLUTION = 2e-5
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class MixSpec:
    budget: int  # bytes of the GGUF file
    label: str  # the artifact's type name, e.g. "MIX-5.5GB"
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    bands: int = DEFAULT_BANDS
    positions: int = mix_probe.DEFAULT_SENSITIVITY_POSITIONS
    ram: int | None = None  # --budget-ram: peak RAM at n_ctx; the file budget is measured from it
    n_ctx: int = DEFAULT_CONTEXT


def parse_budget(text: str) -> tuple[int, str]:
    """``"5.5GB"`` -> (bytes, ``"MIX-5.5GB"``); a budget needs a unit so a typo is not read as bytes."""
    m = _BUDGET.match(str(text))
    if not m:
        raise ConfigError(f'budget "{text}" is not a size with a unit; write e.g. 5.5GB, 800MB or 4GiB')
    return parse_bytes(text), f"MIX-{m.group(1)}{m.group(2).upper()}"


def parse_lang_weights(text: str | None) -> dict[str, float]:
    """``"ja=0.7,en=0.3"`` -> {"ja": 0.7, "en": 0.3}, normalised to sum 1."""
    if not text:
        return dict(DEFAULT_WEIGHTS)
    weights: dict[str, float] = {}
    for part in str(text).replace(" ", "").split(","):
        lang, _, value = part.partition("=")
        try:
            weights[lang] = float(value)
        except ValueError:
            weights[lang] = -1.0
        if lang not in DEFAULT_WEIGHTS or weights[lang] < 0:
            raise ConfigError(
                f'--lang-weight "{part}" is not LANG=WEIGHT with LANG one of ja, en and WEIGHT >= 0; '
                "write e.g. ja=0.7,en=0.3"
            )
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError("--lang-weight gives every language weight 0; give one a positive weight")
    return {lang: weights.get(lang, 0.0) / total for lang in DEFAULT_WEIGHTS}


def mix_spec(
    budget: str,
    lang_weight: str | None = None,
    types: str | Sequence[str] | None = None,
    bands: int | None = None,
    positions: int | None = None,
    *,
    ram: bool = False,
    n_ctx: int | None = None,
) -> MixSpec:
    """``budget`` is a file size, or with ``ram`` a peak RAM at ``n_ctx`` tokens (``MIX-RAM8GB``)."""
    size, label = parse_budget(budget)
    if n_ctx is not None and n_ctx < 1:
        raise ConfigError(f"--ram-context must be a positive number of tokens, not {n_ctx}")
    return MixSpec(
        size,
        label.replace("MIX-", "MIX-RAM") if ram else label,
        parse_lang_weights(lang_weight),
        tuple(parse_candidates(types)),
        bands or DEFAULT_BANDS,
        positions or mix_probe.DEFAULT_SENSITIVITY_POSITIONS,
        size if ram else None,
        n_ctx or DEFAULT_CONTEXT,
    )


def mix_settings(spec: MixSpec) -> dict[str, Any]:
    """What a mix was made for (its manifest's config): a recipe rebuilds it when any differs."""
    return {
        "budget_bytes": spec.budget,
        "lang_weights": spec.weights,
        "bands": spec.bands,
        "candidates": list(spec.candidates),
    }


@dataclass
class MixResult:
    record: dict[str, Any]  # what the manifest's details.mix says
    warnings: list[str]


def _tensors(f16: Path) -> list[Tensor]:
    return [Tensor(name, dims) for name, dims, _ in read_gguf(f16).tensors]


def build_mix(
    f16: Path,
    dest: Path,
    spec: MixSpec,
    *,
    imatrix=None,
    cache: Path | None = None,
    progress: Progress,
) -> MixResult:
    """Write ``dest`` (and ``tensor-types.txt`` beside it): ``f16`` at the chosen per-tensor types."""
    start = time.perf_counter()
    ram_record: dict[str, Any] = {}
    if spec.ram:
        progress.task(f"{spec.label}: measuring what running the model costs besides its weights", total=None)
        budget, ram_record = file_budget(f16, spec.ram, spec.n_ctx)
        progress.note(
            f"{spec.label}: peak RAM {human_bytes(spec.ram)} at {spec.n_ctx} tokens = file up to "
            f"{human_bytes(budget)} + measured overhead {human_bytes(ram_record['overhead_bytes'])} "
            f"(KV cache {human_bytes(ram_record['kv_cache_bytes'])} of it)"
        )
        spec = replace(spec, budget=budget)
    needing = [t for t in spec.candidates if t in NEEDS_IMATRIX]
    if needing and imatrix is None:
        raise ConfigError(
            f"{', '.join(needing)} need an importance matrix; pass --imatrix auto or FILE, "
            "or leave them out of --mix-types"
        )
    f16_size = f16.stat().st_size
    tensors = _tensors(f16)
    groups = tensor_groups(tensors, spec.bands)
    options, fallbacks = {}, []
    for g in groups:
        options[g.name], notes = group_options(g, spec.candidates)
        fallbacks += notes
    for line in fallbacks:
        progress.note(f"{spec.label}: {line}")
    grouped = {t.name for g in groups for t in g.tensors}
    fixed = f16_size - sum(tensor_nbytes("F16", t) for t in tensors if t.name in grouped)
    fixed += METADATA_MARGIN
    smallest = fixed + sum(min(o.nbytes for o in options[g.name]) for g in groups)
    if spec.budget >= f16_size:
        progress.note(
            f"{spec.label}: the budget is at least the F16 file ({human_bytes(f16_size)}); "
            "nothing needs quantizing, so this is a copy of the F16 GGUF"
        )
        shutil.copyfile(f16, dest)
        return MixResult({"budget_bytes": spec.budget, "copied_f16": True, "ram": ram_record}, [])
    if spec.budget < smallest:
        raise ConfigError(
            f"budget {human_bytes(spec.budget)} is below the smallest reachable size "
            f"{human_bytes(smallest)} ({smallest} bytes: every tensor group at its smallest type of "
            f"{', '.join(spec.candidates)}); raise --budget to at least that"
        )
    progress.task(f"{spec.label}: measuring tensor sensitivities (ja/en KL per group and type)", total=None)
    sens = mix_probe.measure(
        f16,
        groups,
        options,
        imatrix=imatrix,
        positions=spec.positions,
        cache=cache,
        on_probe=lambda i, n, what: progress.advance(i, n),
    )
    for g in groups:
        for opt in options[g.name]:
            opt.kl = sens.weighted(g.name, opt, spec.weights)
    largest = max(abs(opt.kl) for g in groups for opt in options[g.name])
    if largest < KL_RESOLUTION:
        progress.note(
            f"{spec.label}: no tensor group's KL increment exceeds {KL_RESOLUTION:g} (largest "
            f"{largest:.1e}), what arithmetic order alone moves: the model's output barely depends on "
            "its weights' precision (random weights?), so the types below are chosen by noise"
        )
    knapsack_start = time.perf_counter()
    plan = choose(groups, options, spec.budget - fixed)
    knapsack_seconds = time.perf_counter() - knapsack_start
    search_seconds = time.perf_counter() - start
    types = plan.tensor_types()
    types_path = dest.parent / TYPES_FILE
    types_path.write_text(tensor_type_file(types), encoding="utf-8")
    progress.task(f"{spec.label}: quantizing with the chosen per-tensor types", total=None)
    warnings = quantize_gguf(
        f16, dest, quant_type(mix_probe.BASE_TYPE), imatrix=imatrix, tensor_types=types_path
    )
    real_size = dest.stat().st_size
    if real_size > spec.budget:
        raise ConfigError(
            f"{spec.label}: the quantized file is {real_size} bytes, over the budget of {spec.budget}; "
            "raise --budget a little"
        )
    # the search's own model (``Sensitivity.cost``): base KL plus the chosen groups' increments
    predicted = {
        lang: max(
            0.0,
            sens.base_kl[lang]
            + sum(sens.cost(g, mix_probe.option_key(o), lang) for g, o in plan.choice.items()),
        )
        for lang in sens.base_kl
    }
    measured = mix_probe.kl_by_lang(f16, dest, spec.positions, mix_probe.probe_threads())
    record = {
        "budget_bytes": spec.budget,
        "size_bytes": real_size,
        "predicted_size_bytes": fixed - METADATA_MARGIN + plan.nbytes,
        "lang_weights": spec.weights,
        "candidates": list(spec.candidates),
        "bands": spec.bands,
        "base_type": mix_probe.BASE_TYPE,
        "groups": {g: sorted(set(o.types.values())) for g, o in plan.choice.items()},
        "fallbacks": fallbacks,
        "sensitivity": {
            "text": "calibration fit text (not the held-out text results are judged on)",
            "positions_per_language": spec.positions,
            "probes": sens.probes,
            "probe_seconds": round(sens.seconds, 1),
        },
        "search_seconds": round(search_seconds, 1),  # probes (unless saved) + knapsack
        "knapsack_seconds": round(knapsack_seconds, 3),
        "largest_increment": largest,
        "decidable": largest >= KL_RESOLUTION,  # False: the sensitivities could not rank the types
        "predicted_kl": predicted,
        "measured_kl_sensitivity_text": measured,
        "method": "multiple-choice knapsack (DP) over additive per-group KL increments",
        "tensor_types_file": TYPES_FILE,
        "ram": ram_record,
    }
    progress.finish(
        f"{spec.label}: {human_bytes(real_size)} (budget {human_bytes(spec.budget)}), search "
        f"{search_seconds:.0f} s; KL ja predicted {predicted['ja']:.4f} / real {measured['ja']:.4f}, "
        f"en {predicted['en']:.4f} / {measured['en']:.4f}"
    )
    return MixResult(record, warnings)


MIX_PREFIX = "mix:"


def split_mix(names: Sequence[str] | str | None) -> tuple[list[str], list[str]]:
    """``["q8_0", "mix:5.5GB"]`` -> (["q8_0"], ["5.5GB"]): llama.cpp types and mix budgets."""
    if names is None:
        return [], []
    items = [n for n in names.replace(" ", "").split(",") if n] if isinstance(names, str) else list(names)
    types = [str(n) for n in items if not str(n).lower().startswith(MIX_PREFIX)]
    budgets = [str(n)[len(MIX_PREFIX) :] for n in items if str(n).lower().startswith(MIX_PREFIX)]
    for budget in budgets:
        parse_budget(budget)
    return types, budgets
