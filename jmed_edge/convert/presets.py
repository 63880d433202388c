"""Named target-machine presets for ``convert --preset``: which quant types to build, and how.

Each preset is a YAML file under ``convert/presets/`` (shipped with the package), opening
with the command that uses it and commenting why each type is there. A user's own YAML file
of the same shape works too (``--preset my-box.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from jmed_edge.convert.quant_types import quant_type
from jmed_edge.errors import ConfigError, did_you_mean
from jmed_edge.fsutil import parse_bytes
from jmed_edge.resources import shipped


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    device: Literal["cpu", "gpu"]
    memory: str  # RAM (cpu) or VRAM (gpu) the model may use, e.g. "8GB"
    quants: list[str] = []
    # Sizes of mixed-precision GGUFs (``mix.py``): per-tensor types chosen to fit each, e.g. ["4.5GB"].
    budgets: list[str] = []
    imatrix: str = "auto"  # auto | none | a file path
    outtype: Literal["f16", "bf16"] = "f16"

    @field_validator("quants")
    @classmethod
    def _known_quants(cls, value: list[str]) -> list[str]:
        try:
            return [quant_type(q).name for q in value]
        except ConfigError as exc:  # as ValueError, pydantic collects it with the other problems
            raise ValueError(str(exc)) from None

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: list[str]) -> list[str]:
        from jmed_edge.convert.mix import parse_budget

        try:
            return [str(b) for b in value if parse_budget(str(b))]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _something_to_make(self) -> Preset:
        if not self.quants and not self.budgets:
            raise ValueError("name quants (a list of types) or budgets (a list of sizes), or both")
        return self

    @field_validator("memory")
    @classmethod
    def _size(cls, value: str) -> str:
        try:
            parse_bytes(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_bytes(self.memory)


def shipped_presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(shipped("convert/presets").glob("*.yaml"))}


def load_preset(name_or_path: str | Path) -> Preset:
    """A shipped preset by name (``cpu-8gb``) or a YAML file; every problem reported in one line."""
    path = Path(name_or_path)
    if not path.is_file():
        presets = shipped_presets()
        if str(name_or_path) not in presets:
            raise ConfigError(
                f'unknown preset "{name_or_path}"{did_you_mean(str(name_or_path), presets)}; '
                f"known: {', '.join(presets)} (or a YAML file)"
            )
        path = presets[str(name_or_path)]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc.__class__.__name__}); fix it") from exc
    try:
        return Preset.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'preset'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
