"""The training recipe: a YAML file validated into typed sections, every problem reported at once.

A recipe may hold sections owned by later stages (``convert:``, ``bench:``, ``report:``); training
validates only its own (``model``, ``data``, ``lora``, ``train``, ``output``) and rejects unknown
keys inside them with a "did you mean". Relative data paths resolve against the shipped root for
a shipped recipe and against the recipe's own folder for a user's recipe.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jmed_edge.errors import ConfigError, did_you_mean
from jmed_edge.prompts import TEMPLATES
from jmed_edge.recipes_cli import resolve_recipe
from jmed_edge.resources import shipped_root

Format = Literal["alpaca", "chat", "igakuqa"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# A subset of transformers' OptimizerNames: plain AdamW, its fused CUDA kernel, and the
# bitsandbytes 8-bit / paged variants the QLoRA paper uses to fit 7B training on one GPU.
Optimizer = Literal[
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adafactor",
    "sgd",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    path: str = "default"
    quantization: Literal["none", "nf4"] = "none"


class DataFile(_Section):
    path: str
    format: Format | None = None


class McqSection(_Section):
    languages: list[Literal["ja", "en"]] = Field(default_factory=lambda: ["ja"], min_length=1)
    answer_text: bool = False
    text_only: bool = True


class DataSection(_Section):
    files: list[str | DataFile] = Field(min_length=1)
    format: Format = "alpaca"
    template: str = "alpaca"
    lang: Literal["auto", "ja", "en"] = "auto"
    system: str | None = None
    eval_split: float = Field(default=0.0, ge=0.0)
    mcq: McqSection = Field(default_factory=McqSection)

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        if value not in TEMPLATES:
            raise ValueError(
                f'unknown template "{value}"{did_you_mean(value, TEMPLATES)}; known: {", ".join(TEMPLATES)}'
            )
        return value

    @field_validator("eval_split")
    @classmethod
    def _split(cls, value: float) -> float:
        if 0.5 <= value < 1 or (value >= 1 and value != int(value)):
            raise ValueError(f"expected a fraction below 0.5 or a whole number of examples, found {value}")
        return value


class LoraSection(_Section):
    r: int = Field(default=8, gt=0)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj"]
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError('expected at least one module name, or "all-linear"; found an empty list')
        return value


class TrainSection(_Section):
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    lr: float = Field(default=2e-4, gt=0)
    schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup: float = Field(default=0.0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    optimizer: Optimizer = "adamw_torch"
    max_grad_norm: float = Field(default=1.0, ge=0)
    batch_size: int = Field(default=4, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    max_length: int = Field(default=512, ge=16)
    seed: int = 42
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    log_every: int = Field(default=1, gt=0)
    eval_every: int | None = Field(default=None, gt=0)


class OutputSection(_Section):
    dir: str = "runs/adapter"
    checkpoint_every: int = Field(default=50, gt=0)
    keep_checkpoints: int = Field(default=2, gt=0)


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelSection, "data": DataSection, "lora": LoraSection,
    "train": TrainSection, "output": OutputSection,
}  # fmt: skip
REQUIRED = ("data",)
# Sections of the whole-pipeline recipe (`jmed-edge run`), read by jmed_edge.pipeline.recipe.
PIPELINE_SECTIONS = ("convert", "bench", "report")


class Recipe(BaseModel):
    """A validated recipe; ``source`` is the YAML it came from, ``base_dir`` where its relative data paths start."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    lora: LoraSection = Field(default_factory=LoraSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)
    source: str = ""
    base_dir: str = "."
    shipped: bool = False

    def data_files(self) -> list[tuple[Path, str]]:
        """Every data file or folder with its format, paths resolved (see ``resolve_data_path``)."""
        return [
            (resolve_data_path(entry if isinstance(entry, str) else entry.path, self),
             self.data.format if isinstance(entry, str) or entry.format is None else entry.format)
            for entry in self.data.files
        ]  # fmt: skip

    def resolved(self) -> dict[str, Any]:
        """The training sections with data paths made absolute: what the manifest records."""
        out = self.model_dump(include=set(SECTIONS))
        out["data"]["files"] = [{"path": str(p), "format": f} for p, f in self.data_files()]
        return out


def resolve_data_path(raw: str, recipe: Recipe) -> Path:
    """Absolute path of a data entry; a copied shipped recipe still finds the bundled data."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    candidate = (Path(recipe.base_dir) / path).resolve()
    if not candidate.exists() and not recipe.shipped and (shipped_root() / path).exists():
        return (shipped_root() / path).resolve()
    return candidate


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` settings; values are read as YAML (``20``, ``[q_proj,v_proj]``, ``null``)."""
    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f'--set takes key=value, e.g. train.max_steps=20; found "{item}"')
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f'--set {key}: "{part}" is a value, not a section; found "{item}"')
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            node[parts[-1]] = value
    return data


# Union members pydantic names in an error's location, with the type of input each one takes.
_UNION_TAGS = {"str": str, "DataFile": dict, "list[str]": list, "literal['all-linear']": str}
_UNION_EXPECTED = {
    "files": "a file path or {path, format}",
    "target_modules": 'a list of module names or "all-linear"',
}


def _loc(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _UNION_TAGS:
            continue  # the union member pydantic tried; the user needs only the key
        else:
            text += f".{part}" if text else str(part)
    return text


def _union_error(section: str, raw: dict[str, Any], error: dict[str, Any]) -> str | None:
    """For an error inside a union (``str | DataFile``): keep it only when the input has that member's
    type; when the input fits no member, one line saying what is expected ('' = drop the error)."""
    loc = error["loc"]
    tag_at = next((i for i, part in enumerate(loc) if part in _UNION_TAGS), None)
    if tag_at is None:
        return None
    value: Any = raw
    for part in loc[:tag_at]:
        value = value[part] if isinstance(value, dict | list) else None
    if isinstance(value, _UNION_TAGS[loc[tag_at]]):
        return None  # the member that fits the input: its own error is the useful one
    if any(isinstance(value, kind) for kind in _UNION_TAGS.values()):
        return ""  # another member fits the input and reports for it
    field = next((p for p in reversed(loc[:tag_at]) if isinstance(p, str)), "")
    return f"{_loc((section, *loc[:tag_at]))}: expected {_UNION_EXPECTED.get(field, 'another type')}, found {value!r}"


# Names other trainers (transformers TrainingArguments, peft LoraConfig, torchtune, axolotl) use
# for settings this schema names differently: "did you mean" falls back on them.
ALIASES = {
    "rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target": "target_modules",
    "learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs", "lr_scheduler_type": "schedule",
    "lr_scheduler": "schedule", "scheduler": "schedule", "warmup_ratio": "warmup", "warmup_steps": "warmup",
    "per_device_train_batch_size": "batch_size", "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum", "max_seq_length": "max_length", "sequence_len": "max_length",
    "max_seq_len": "max_length", "optim": "optimizer", "dtype": "precision", "bf16": "precision",
    "fp16": "precision", "quantize": "quantization", "load_in_4bit": "quantization", "output_dir": "dir",
    "save_steps": "checkpoint_every", "save_total_limit": "keep_checkpoints", "logging_steps": "log_every",
    "eval_steps": "eval_every", "dataset": "files", "data_files": "files", "prompt_template": "template",
    "base_model": "path", "model_name_or_path": "path", "val_set_size": "eval_split",
}  # fmt: skip


def _suggest(key: str, fields: list[str]) -> str:
    hint = did_you_mean(key, fields)
    if not hint and ALIASES.get(key) in fields:
        hint = f' (did you mean "{ALIASES[key]}"?)'
    return hint


def _fields_at(section: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names of the model a key was found in, to suggest the closest."""
    model: Any = section
    for part in loc[:-1]:
        field = (
            model.model_fields.get(part) if isinstance(part, str) and hasattr(model, "model_fields") else None
        )
        if field is None:
            if part == "DataFile":
                model = DataFile
            continue
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else model
    return list(getattr(model, "model_fields", {}))


def _describe(section: str, model: type[BaseModel], error: dict[str, Any]) -> str | None:
    loc = (section, *error["loc"])
    where = _loc(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        return f"{where}: unknown key{_suggest(key, _fields_at(model, error['loc']))}"
    if kind == "missing":
        return f"{where}: required"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        found = str(error.get("input"))
        choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",")]
        return f'{where}: expected {expected}, found "{found}"{did_you_mean(found, choices)}'
    if kind == "value_error":  # our validators already say what they found
        return f"{where}: {error['msg'].removeprefix('Value error, ')}"
    return f"{where}: {error['msg']} (found {error.get('input')!r})"


def validate_recipe(
    raw: dict[str, Any], *, source: str = "", base_dir: Path = Path("."), shipped: bool = False
) -> Recipe:
    """Validate a recipe dict; raise one ``ConfigError`` listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source or 'recipe'} must be a YAML mapping of sections (model:, data:, train:, ...)"
        )
    problems: list[str] = []
    for key in raw:
        if key in SECTIONS or key in PIPELINE_SECTIONS:
            continue
        name = ALIASES.get(str(key), str(key))
        owner = next((section for section, model in SECTIONS.items() if name in model.model_fields), None)
        if owner:
            problems.append(f"{key}: a {owner} setting; put it under {owner}: (or --set {owner}.{name}=...)")
        else:
            known = [*SECTIONS, *PIPELINE_SECTIONS]
            problems.append(
                f"{key}: unknown section{did_you_mean(str(key), known)} (sections: {', '.join(known)})"
            )
    for name in REQUIRED:
        if raw.get(name) is None:
            problems.append(f"{name}: required section")
    sections: dict[str, Any] = {}
    for name, model in SECTIONS.items():
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a mapping of settings, found {value!r}")
            continue
        try:
            sections[name] = model.model_validate(value)
        except ValidationError as exc:
            seen: set[str] = set()
            for error in exc.errors():
                line = _union_error(name, value, dict(error))
                if line is None:
                    line = _describe(name, model, dict(error))
                if line and line not in seen:
                    seen.add(line)
                    problems.append(line)
    if "data" in sections:  # the file checks run even when other sections have problems
        partial = Recipe(**sections, source=source, base_dir=str(base_dir), shipped=shipped)
        problems += _cross_checks(partial)
    if problems:
        label = f"recipe {source}" if source else "recipe"
        count = f"{len(problems)} problems" if len(problems) > 1 else "a problem"
        raise ConfigError(f"{label} has {count}: " + "; ".join(problems))
    return partial


def _cross_checks(recipe: Recipe) -> list[str]:
    problems = []
    for i, (path, fmt) in enumerate(recipe.data_files()):
        if not path.exists():
            problems.append(f"data.files[{i}]: {path} not found")
        elif fmt == "igakuqa" and path.is_file() and path.suffix != ".jsonl":
            problems.append(
                f"data.files[{i}]: igakuqa data is a folder of .jsonl files or one .jsonl, found {path.name}"
            )
        elif fmt != "igakuqa" and path.is_dir():
            problems.append(f"data.files[{i}]: {path} is a folder; {fmt} data is a .jsonl file")
        if fmt == "chat" and recipe.data.template != "chat":
            problems.append(
                f'data.template: chat-format data ({path.name}) needs template "chat", found "{recipe.data.template}"'
            )
    return sorted(set(problems), key=problems.index)


def load_recipe(path_or_name: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Read and validate a recipe file or shipped recipe name, with ``--set`` overrides applied."""
    path = resolve_recipe(path_or_name).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}{where} is not valid YAML ({getattr(exc, 'problem', exc)}); fix the file"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a YAML mapping of sections (model:, data:, train:, ...)")
    root = shipped_root().resolve()
    is_shipped = path.parent == (root / "recipes")
    base_dir = root if is_shipped else path.parent
    return validate_recipe(
        apply_overrides(raw, overrides), source=str(path), base_dir=base_dir, shipped=is_shipped
    )


def data_hashes(recipe: Recipe) -> dict[str, str]:
    """sha256 of every data file the recipe reads (each .jsonl of an IgakuQA folder)."""
    from jmed_edge.manifest import sha256_file

    hashes = {}
    for path, _ in recipe.data_files():
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        for file in files:
            hashes[str(file)] = sha256_file(file)
    return hashes


# Settings that do not change the trained weights, left out of the fingerprint.
_NOT_FINGERPRINTED = {"output": None, "train": {"log_every"}}


def fingerprint_config(recipe: Recipe) -> dict[str, Any]:
    config = recipe.resolved()
    config.pop("output")
    for key in _NOT_FINGERPRINTED["train"]:
        config["train"].pop(key, None)
    return config


def recipe_fingerprint(recipe: Recipe) -> str:
    """A hash of everything that shapes the adapter: the resolved training config and data hashes."""
    payload = {"config": fingerprint_config(recipe), "data": data_hashes(recipe)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_settings(a, b, f"{name}.")
        elif a != b:
            changed.append(name)
    return changed
