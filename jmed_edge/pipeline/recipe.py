"""The recipe sections the pipeline owns: ``convert``, ``bench`` and ``report``.

Training validates its own sections (``model``, ``data``, ``lora``, ``train``, ``output``); this
module validates the rest with the same rules (every problem at once, unknown keys get a
"did you mean").
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jmed_edge.errors import ConfigError, did_you_mean


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GgufSection(_Section):
    enabled: bool = True
    # llama.cpp types, and "mix:SIZE" for a mixed-precision GGUF fitting SIZE (e.g. mix:5.5GB)
    quants: list[str] = Field(default_factory=lambda: ["q8_0", "q4_k_m"])
    outtype: Literal["f16", "bf16"] = "f16"
    imatrix: str = "auto"  # "auto", "none" or a file: applied to every type that takes one

    @field_validator("quants")
    @classmethod
    def _known_quants(cls, value: list[str]) -> list[str]:
        from jmed_edge.convert.mix import split_mix
        from jmed_edge.convert.quant_types import parse_quants

        try:
            parse_quants(split_mix(value)[0])
        except ConfigError as exc:  # as ValueError, pydantic reports it with the other problems
            raise ValueError(str(exc)) from None
        return value


class OnnxSection(_Section):
    enabled: bool = False
    precisions: list[str] = Field(default_factory=lambda: ["int8", "int4"])
    target: Literal["cpu", "cuda", "dml"] = "cpu"


class ConvertSection(_Section):
    gguf: GgufSection = Field(default_factory=GgufSection)
    onnx: OnnxSection = Field(default_factory=OnnxSection)


class BenchSection(_Section):
    benchmarks: list[str] = Field(default_factory=lambda: ["jmed-sample"], min_length=1)
    mode: Literal["loglik", "generate"] = "loglik"
    template: str = "medpalm"
    shots: int = Field(default=0, ge=0)
    langs: list[Literal["ja", "en"]] = Field(default_factory=lambda: ["ja", "en"], min_length=1)
    limit: int | None = Field(default=None, gt=0)
    seed: int = 0
    include_merged: bool = True  # also bench the merged HF model (the reference by default)


class ReportSection(_Section):
    reference: str = "F16"  # artifact label: "merged", "F16", "Q8_0", ...
    budget: str | None = None  # e.g. "8GB"
    max_loss: float = Field(
        default=1.0, gt=0
    )  # points: the loss a deployment accepts (non-inferiority margin)
    prefer: Literal["smallest", "fastest", "accurate"] = "smallest"  # among certified artifacts
    kl: bool = True


class PipelineSections(_Section):
    convert: ConvertSection = Field(default_factory=ConvertSection)
    bench: BenchSection = Field(default_factory=BenchSection)
    report: ReportSection = Field(default_factory=ReportSection)


OWNED = ("convert", "bench", "report")


def _describe(err: dict[str, Any], known: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        leaf = str(err["loc"][-1])
        return f"unknown key {where}{did_you_mean(leaf, known.get(where.rsplit('.', 1)[0], []))}"
    return f"{where}: {err['msg']}"


def _known_keys() -> dict[str, list[str]]:
    known: dict[str, list[str]] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        known[prefix] = list(model.model_fields)
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}.{name}" if prefix else name)

    walk(PipelineSections, "")
    return known


def load_sections(path: Path, overrides: Iterable[str] = ()) -> PipelineSections:
    """Validate the pipeline-owned sections of the recipe at ``path`` (``--set`` overrides applied)."""
    from jmed_edge.train.recipe import apply_overrides

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc}); fix the file") from exc
    from jmed_edge.train.recipe import SECTIONS

    raw = apply_overrides(raw, [o for o in overrides if o.split(".", 1)[0] in OWNED])
    sections = (*SECTIONS, *OWNED)
    problems = [f"unknown section {k}{did_you_mean(str(k), sections)}" for k in raw if k not in sections]
    owned = {k: v for k, v in raw.items() if k in OWNED}
    try:
        parsed = PipelineSections.model_validate(owned)
    except ValidationError as exc:
        known = _known_keys()
        problems += [_describe(e, known) for e in exc.errors()]
        parsed = None
    if problems or parsed is None:
        raise ConfigError(f"{path}: {'; '.join(problems)}")
    return parsed
