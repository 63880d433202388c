"""How much each tensor group costs at each type, in Japanese and English: measured KL increments.

For every group and candidate option, llama.cpp's quantizer writes a probe GGUF from the F16
GGUF where that group alone has the option's types and every other weight is Q8_0 (per-tensor
overrides apply only on top of a quantized base type, ``llama_tensor_get_type`` in
``src/llama-quant.cpp``). The probe's KL against the F16 reference on the *sensitivity* text
(part of the imatrix's fit text, never the text a result is judged on), minus the all-Q8_0
base's KL, is the group's increment: HAWQ-style sensitivity, measured on the output
distribution rather than estimated from the Hessian. An F16 probe's increment is below zero:
what Q8_0 itself costs that group, which a budget above all-Q8_0 can buy back. The F16
reference's log-probabilities are computed once and reused for every probe (``kl``'s reference
cache).

Measurements are saved as JSON keyed by the F16 file, imatrix, texts and settings, so several
budgets over one model measure once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge.convert import kl
from jmed_edge.convert.mix_plan import Group, Option, tensor_type_file
from jmed_edge.convert.probes import CALIBRATION_LANGS, sensitivity_texts
from jmed_edge.convert.quant_types import quant_type
from jmed_edge.convert.quantize import quantize_gguf

log = logging.getLogger(__name__)

BASE_TYPE = "Q8_0"  # what every tensor outside the probed group gets
DEFAULT_SENSITIVITY_POSITIONS = 128  # per language; the increments that decide are 10-100x its noise


@dataclass
class Sensitivity:
    base_kl: dict[str, float]  # lang -> KL of the all-Q8_0 base
    increments: dict[str, dict[str, dict[str, float]]]  # group -> option key -> lang -> KL increment
    seconds: float
    probes: int

    def cost(self, group: str, key: str, lang: str) -> float:
        """The increment the search uses, with the sign physics allows.

        Every probe is judged against F16 with the rest of the model at Q8_0, so no quantized
        type (Q8_0 is the finest) can truly cost less than 0, and F16 (the reference itself)
        cannot cost more. Measured past those bounds is the noise of a few hundred positions and
        counts as 0. Letting negative noise of quantized types count made the additive
        prediction of the 135M default's mixes optimistic by 2-3x in Japanese (0.004 predicted,
        0.015 real at the Q5_K_M size); clamped, it stayed within 22% (0.011 vs 0.014)."""
        value = self.increments[group][key][lang]
        return min(value, 0.0) if key == "F16" else max(value, 0.0)

    def weighted(self, group: str, option: Option, weights: dict[str, float]) -> float:
        key = option_key(option)
        return sum(weights[lang] * self.cost(group, key, lang) for lang in weights)


def option_key(option: Option) -> str:
    return ",".join(sorted(set(option.types.values())))


def _stamp(path: Path | None) -> str:
    if path is None:
        return ""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _cache_key(
    f16: Path, imatrix: Path | None, groups: list[Group], options: dict[str, list[Option]], positions: int
) -> str:
    """What the saved increments depend on: the files, the groups, the options and the text."""
    parts = [
        _stamp(f16),
        _stamp(imatrix),
        json.dumps([[g.name, [t.name for t in g.tensors]] for g in groups]),
        json.dumps({g: sorted(option_key(o) for o in opts) for g, opts in options.items()}),
        json.dumps(sensitivity_texts(), ensure_ascii=False),
        str(positions),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def probe_threads() -> int:
    """llama.cpp threads for the many short probe runs: the cores the load average leaves free.

    On a shared 2-core machine (load ~4.5) one thread decoded 64 tokens in 0.26 s and two in
    0.9-3.7 s: threads that wait at llama.cpp's barriers for a busy core lose more than they add."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, cores - round(os.getloadavg()[0])))


def kl_by_lang(f16: Path, candidate: Path, positions: int, threads: int | None = None) -> dict[str, float]:
    result = kl.kl_against(f16, candidate, sensitivity_texts(), positions=positions, n_threads=threads)
    return {lang: float(result[lang]["kl_mean"]) for lang in CALIBRATION_LANGS}


def measure(
    f16: Path,
    groups: list[Group],
    options: dict[str, list[Option]],
    *,
    imatrix=None,
    positions: int = DEFAULT_SENSITIVITY_POSITIONS,
    cache: Path | None = None,
    on_probe: Callable[[int, int, str], None] | None = None,
) -> Sensitivity:
    """KL increments of every (group, option) but the all-Q8_0 one (its increment is 0 by definition)."""
    key = _cache_key(f16, imatrix and imatrix.path, groups, options, positions)
    if cache and cache.is_file():
        saved: dict[str, Any] = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            log.info("sensitivities from %s", cache)
            return Sensitivity(saved["base_kl"], saved["increments"], saved["seconds"], saved["probes"])
    start = time.perf_counter()
    todo = [(g, opt) for g in groups for opt in options[g.name] if set(opt.types.values()) != {BASE_TYPE}]
    increments: dict[str, dict[str, dict[str, float]]] = {g.name: {} for g in groups}
    base = quant_type(BASE_TYPE)
    threads = probe_threads()
    log.info("sensitivity probes on %d llama.cpp thread(s) (cores the load average leaves free)", threads)
    with tempfile.TemporaryDirectory(prefix="jmed-mix-probe-") as tmp:
        probe, types_file = Path(tmp) / "probe.gguf", Path(tmp) / "tensor-types.txt"
        quantize_gguf(f16, probe, base, imatrix=imatrix, threads=threads)
        base_kl = kl_by_lang(f16, probe, positions, threads)
        for i, (group, option) in enumerate(todo):
            if on_probe:
                on_probe(i, len(todo), f"{group.name} at {option_key(option)}")
            types_file.write_text(tensor_type_file(option.types), encoding="utf-8")
            quantize_gguf(f16, probe, base, imatrix=imatrix, tensor_types=types_file, threads=threads)
            measured = kl_by_lang(f16, probe, positions, threads)
            increments[group.name][option_key(option)] = {
                lang: measured[lang] - base_kl[lang] for lang in CALIBRATION_LANGS
            }
        for g in groups:
            for opt in options[g.name]:
                increments[g.name].setdefault(option_key(opt), dict.fromkeys(CALIBRATION_LANGS, 0.0))
    seconds = time.perf_counter() - start
    result = Sensitivity(base_kl, increments, seconds, len(todo) + 1)
    if cache:
        payload = {"key": key, "positions_per_language": positions, **result.__dict__}
        cache.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return result
