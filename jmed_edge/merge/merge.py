"""``merge_adapter``: fold a LoRA adapter into its base, save it, and prove the saved model right.

The merge happens in 16 or 32 bits (never 4-bit, where the merged update would be rounded away;
a QLoRA adapter is merged into the base's full-precision weights), by default in the base's own
dtype. A plain LoRA adapter is merged tensor by tensor from the base's shards (``stream``) and
checked module by module from the written files (``streamed_check``), so a 7B merges in a few GB.
Anything else is merged by peft on the loaded model: the unmerged logits on the probe prompts are
kept as the reference, the adapter is merged in place, saved, the in-memory model freed, and the
saved folder reloaded and compared. Either way what is checked is what was written, and nothing
appears at ``out`` unless the check passes.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from jmed_edge.artifacts import describe
from jmed_edge.errors import ArtifactError, ConfigError, DiskSpaceError, ModelError, VerificationError
from jmed_edge.fsutil import dir_size, ensure_free_space, free_bytes, human_bytes, refuse_overlap, staging_dir
from jmed_edge.manifest import Manifest, parent_record, read_manifest

log = logging.getLogger(__name__)

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_BASE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path} ({exc}); is the folder complete?") from exc


def resolve_base(adapter: Path, manifest: Manifest | None, base: str | Path | None) -> Path:
    """``--base``, else the base named in the adapter's manifest, else adapter_config's local path."""
    if base is not None:
        if str(base) == "default":
            from jmed_edge.models.default import materialise

            return materialise()
        path = Path(base).expanduser()
        if not path.exists():
            raise ModelError(
                f"--base {path} not found; pass the local folder of the model the adapter was trained on"
            )
        return path.resolve()
    tried = []
    if manifest and manifest.parent and manifest.parent.get("path"):
        tried.append(Path(manifest.parent["path"]))
    named = _json(adapter / "adapter_config.json").get("base_model_name_or_path")
    if named:
        tried.append(Path(named).expanduser())
    for path in tried:
        if (path / "config.json").exists():
            return path.resolve()
    where = " or ".join(str(p) for p in tried) or "nothing"
    raise ModelError(f"cannot find the base model of {adapter} (it names {where}); pass --base FOLDER")


def check_base(base: Path, manifest: Manifest | None) -> dict[str, Any]:
    """Fail before loading when ``base`` is no full-precision model of the adapter's architecture."""
    info = describe(base)
    if info.format != "hf-safetensors":
        raise ModelError(
            f"{base} is a {info.format}, not a Hugging Face model folder; pass the base model folder"
        )
    config = _json(base / "config.json")
    quant = config.get("quantization_config") or {}
    if (
        quant.get("load_in_4bit")
        or quant.get("load_in_8bit")
        or quant.get("quant_method") not in (None, "bitsandbytes")
    ):
        raise ModelError(
            f"{base} is a quantized checkpoint ({quant.get('quant_method', 'bitsandbytes')}); merging needs the 16/32-bit "
            "base, since a merge into 4-bit weights rounds the adapter away"
        )
    trained_on = (manifest.details.get("base") if manifest else None) or {}
    differs = [
        f"{key} {trained_on[key]} vs {config.get(key)}"
        for key in _BASE_FIELDS
        if trained_on.get(key) is not None
        and config.get(key) is not None
        and trained_on[key] != config.get(key)
    ]
    if differs:
        raise ModelError(
            f"the adapter was trained on another model than {base} ({'; '.join(differs)}); "
            "pass --base with the model it was trained on"
        )
    return config


def check_adapter_shapes(model: Any, adapter: Path) -> None:
    """Every LoRA matrix must fit a module of the loaded base (name and dimensions)."""
    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        return
    from safetensors import safe_open

    problems = []
    with safe_open(str(weights), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 (safe_open is no dict)
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            module_name, _, rest = key.removeprefix("base_model.model.").rpartition(".lora_")
            try:
                module = model.get_submodule(module_name)
            except AttributeError:
                problems.append(f"it has no {module_name}")
                continue
            shape = fh.get_slice(key).get_shape()
            in_f, out_f = getattr(module, "in_features", None), getattr(module, "out_features", None)
            if rest.startswith("A.") and in_f is not None and shape[1] != in_f:
                problems.append(f"{module_name} takes {in_f} inputs, the adapter {shape[1]}")
            if rest.startswith("B.") and out_f is not None and shape[0] != out_f:
                problems.append(f"{module_name} gives {out_f} outputs, the adapter {shape[0]}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelError(
            f"the adapter does not fit this base: {'; '.join(problems[:3])}{more}; pass --base with the model it was trained on"
        )


def _base_record(base: Path, manifest: Manifest | None) -> dict[str, Any]:
    """The base's parent record; reused from the adapter's manifest when it names this very folder
    (hashing a 7B's 15 GB again would cost a minute)."""
    recorded = manifest.parent if manifest else None
    if recorded and Path(recorded.get("path", "")) == base and recorded.get("sha256"):
        return recorded
    return parent_record(base)


def fold_adapter(peft_model: Any) -> Any:
    """Merge the LoRA update into the base weights, in place; returns the plain model."""
    return peft_model.merge_and_unload(progressbar=False, safe_merge=True)


def _load(folder: Path, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, DTYPES[dtype]))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load {folder} as a causal LM ({type(exc).__name__}: {exc})") from exc
    return model.eval()


def base_dtype(config: dict[str, Any]) -> str:
    """The merge dtype matching the base's own (fp32 when the config does not say)."""
    named = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return next((short for short, long in DTYPES.items() if long == named), "fp32")


def streaming_blocker(adapter: Path, base: Path, config: dict[str, Any], dtype: str) -> str | None:
    """Why this merge must load the whole model (peft in memory), or None when it can stream.

    Raises ``ModelError`` when the adapter's shapes do not fit the base."""
    import torch

    from jmed_edge.merge.stream import fit_problems, read_lora, unsupported
    from jmed_edge.merge.streamed_check import PLAIN_HEAD, missing_keys
    from jmed_edge.merge.tensorfiles import Checkpoint

    reason = unsupported(adapter)
    if reason:
        return reason
    if config.get("model_type") not in PLAIN_HEAD:
        return (
            f"the layer-by-layer check knows {', '.join(sorted(PLAIN_HEAD))}, not {config.get('model_type')}"
        )
    ckpt = Checkpoint(base)
    problems, reason = fit_problems(ckpt, read_lora(adapter))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelError(
            f"the adapter does not fit this base: {'; '.join(problems[:3])}{more}; pass --base with the model it was trained on"
        )
    if reason:
        return reason
    missing = missing_keys(base, ckpt, getattr(torch, DTYPES[dtype]))
    if missing:
        return f"the base stores no tensor {missing[0]} under the model's own name"
    return None


def _check_ram(base: Path, adapter: Path, dtype: str, blocker: str | None, merged_bytes: int) -> None:
    """Streamed: the runtime, the largest tensor twice (read, and cast or looked up in the check)
    and the largest target's fp32 delta three times (1.02x a Qwen2-0.5B-shape model measured).
    In memory: the model loaded, merged in a copy per layer and reloaded (3.0x measured in bf16)."""
    from jmed_edge.memory import RUNTIME_BYTES, ensure_ram

    if blocker is None:
        from jmed_edge.merge.stream import read_lora
        from jmed_edge.merge.tensorfiles import DTYPES as ST_DTYPES
        from jmed_edge.merge.tensorfiles import Checkpoint

        refs = Checkpoint(base).refs
        numel = {name: r.nbytes // ST_DTYPES[r.dtype][1] for name, r in refs.items()}
        target = max(numel.get(f"{m}.weight", 0) for m in read_lora(adapter).modules)
        needed = RUNTIME_BYTES + 2 * max(numel.values()) * _BYTES[DTYPES[dtype]] + 3 * 4 * target
        hint = "close other programs or raise JMED_EDGE_RAM_BUDGET"
    else:
        needed = RUNTIME_BYTES + 3 * merged_bytes
        hint = f"this adapter is merged in memory ({blocker}); use a machine with more RAM"
    ensure_ram(needed, f"merging into {base.name} ({dtype})", hint)


def _merge_streaming(
    adapter: Path, base: Path, config: dict[str, Any], tmp: Path, dtype: str, batch: Any
) -> Any:
    """Stream the merge into ``tmp`` and check it from the files; returns the ParityResult."""
    import torch

    from jmed_edge.merge.stream import read_lora, write_merged
    from jmed_edge.merge.streamed_check import hidden_states, parity
    from jmed_edge.merge.tensorfiles import Checkpoint

    torch_dtype = getattr(torch, DTYPES[dtype])
    ckpt, lora = Checkpoint(base), read_lora(adapter)
    both = hidden_states(base, ckpt, torch_dtype, batch, lora)
    half = both.shape[0] // 2
    merged = write_merged(ckpt, lora, tmp, torch_dtype)
    log.info("merged %d weights, streaming", merged)
    written = dict(config)
    for key in ("dtype", "torch_dtype"):
        if key in written or key == "dtype":
            written[key] = DTYPES[dtype]
    (tmp / "config.json").write_text(
        json.dumps(written, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if (base / "generation_config.json").is_file():
        shutil.copyfile(base / "generation_config.json", tmp / "generation_config.json")
    written_ckpt = Checkpoint(tmp)
    merged_hidden = hidden_states(tmp, written_ckpt, torch_dtype, batch)
    return parity(
        both[half:], both[:half], merged_hidden, ckpt, written_ckpt, config, lora, dtype, torch_dtype
    )


def _merge_in_memory(adapter: Path, base: Path, tmp: Path, dtype: str, batch: Any) -> Any:
    """peft's merge on the loaded model, saved and reloaded; returns the ParityResult."""
    from peft import PeftModel

    from jmed_edge.merge.parity import compare, probe_logits
    from jmed_edge.train.model import quiet_peft

    model = _load(base, dtype)
    check_adapter_shapes(model, adapter)
    base_logits = probe_logits(model, batch)
    with quiet_peft():
        peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    reference = probe_logits(peft_model, batch)
    merged = fold_adapter(peft_model)
    merged.save_pretrained(tmp)
    del merged, peft_model, model
    gc.collect()
    reloaded = _load(tmp, dtype)
    result = compare(reference, probe_logits(reloaded, batch), base_logits, dtype)
    del reloaded
    gc.collect()
    return result


def merge_adapter(
    adapter: str | Path,
    out: str | Path,
    base: str | Path | None = None,
    dtype: str | None = None,
    force: bool = False,
) -> Path:
    """Merge ``adapter`` into its base in ``dtype`` (fp32, bf16 or fp16; default the base's own),
    write ``out``, verify it.

    A plain LoRA adapter on a llama/mistral/qwen2/qwen3 base is merged tensor by tensor and checked
    layer by layer (peak about one tensor, see ``stream``); anything else is merged by peft in
    memory (peak about twice the model)."""
    from transformers import AutoTokenizer

    from jmed_edge.merge.card import model_card
    from jmed_edge.merge.parity import probe_batch

    adapter, out = Path(adapter).expanduser().absolute(), Path(out).expanduser().absolute()
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f'unknown merge dtype "{dtype}"; use one of {", ".join(DTYPES)} (never 4-bit)')
    if describe(adapter).format != "peft-adapter":
        raise ArtifactError(
            f"{adapter} is not a LoRA adapter (no adapter_config.json); pass the folder jmed-edge train wrote"
        )
    if out.exists() and not force:
        raise ArtifactError(f"{out} already exists; pass --force to replace it or pick another --out")
    manifest = read_manifest(adapter, required=False)
    base_path = resolve_base(adapter, manifest, base)
    refuse_overlap(out, {"adapter": adapter, "base model": base_path})
    base_config = check_base(base_path, manifest)
    dtype = dtype or base_dtype(base_config)
    source_bytes = _BYTES[DTYPES[base_dtype(base_config)]]
    weights = sum(p.stat().st_size for p in base_path.glob("*.safetensors")) or dir_size(base_path)
    merged_bytes = int(weights * _BYTES[DTYPES[dtype]] / source_bytes)
    ensure_free_space(out.parent, merged_bytes, "the merged model")
    blocker = streaming_blocker(adapter, base_path, base_config, dtype)
    _check_ram(base_path, adapter, dtype, blocker, merged_bytes)

    quantized = bool(manifest and manifest.details.get("quantization") == "nf4")
    note = (
        f"The adapter was trained (QLoRA) against the 4-bit NF4 base; it is merged into the base reloaded in "
        f"{dtype}, not into 4-bit weights."
        if quantized
        else f"Merged in {dtype}."
    )
    tokenizer_dir = adapter if (adapter / "tokenizer_config.json").exists() else base_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = probe_batch(tokenizer)

    try:
        with staging_dir(out, force=force) as tmp:
            if blocker is None:
                result = _merge_streaming(adapter, base_path, base_config, tmp, dtype, batch)
                method = "logits of the merged model as written vs base + adapter (unmerged), computed module by module from the files"
            else:
                log.warning("merging in memory with peft (needs about twice the model in RAM): %s", blocker)
                result = _merge_in_memory(adapter, base_path, tmp, dtype, batch)
                method = "logits of the reloaded merged model vs base + adapter"
            tokenizer.save_pretrained(tmp)
            if not result.passed:
                raise VerificationError(
                    f"the merged model does not reproduce base + adapter: {'; '.join(result.failures()) or 'non-finite logits'} "
                    f"on {result.positions} probe positions; nothing was written to {out}"
                )
            base_manifest = read_manifest(base_path, required=False)
            license = (manifest.license if manifest and manifest.license != "unknown" else None) or (
                base_manifest.license if base_manifest else "unknown"
            )
            name = f"{base_manifest.name if base_manifest and base_manifest.name else base_path.name}-merged"
            (tmp / "README.md").write_text(
                model_card(name, base_path, adapter, manifest, license, dtype, result.as_dict(), note),
                encoding="utf-8",
            )
            Manifest(
                kind="model",
                format="hf-safetensors",
                name=name,
                parent=parent_record(adapter),
                config={"dtype": dtype, "base": str(base_path), "adapter": str(adapter)},
                license=license,
                details={"base": _base_record(base_path, manifest), "merged_from_qlora": quantized, "note": note,
                         "streamed": blocker is None, "in_memory_reason": blocker,
                         "pre_tokenizer": (base_manifest.details.get("pre_tokenizer") if base_manifest else None)},
                verification=result.as_dict() | {"method": method},
            ).seal(tmp)  # fmt: skip
    except DiskSpaceError as exc:  # the disk filled while writing: the staging folder is already gone
        raise DiskSpaceError(
            f"disk full while writing the merged model to {out.parent}: it needs about {human_bytes(merged_bytes)}, "
            f"{human_bytes(free_bytes(out.parent))} is free now; nothing was left behind; free some space or choose another --out"
        ) from exc
    log.info("merged model written to %s", out)
    return out
