"""peft LoRA adapter -> GGUF LoRA that llama.cpp applies at run time on the base GGUF.

llama.cpp's ``convert_lora_to_gguf.py`` does the conversion (it needs the base model's
config, not its weights). The check then runs the same prompts through
``Llama(model_path=base F16 GGUF, lora_path=adapter GGUF)`` and through the peft model, and
compares next-token distributions; it also measures the adapter's own effect (peft model vs
its base), so that a passing check is seen to be meaningful and not "both did nothing".
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jmed_edge.artifacts import describe
from jmed_edge.convert import probes
from jmed_edge.convert.checks import FLOAT_FILE_TYPES, Check, VerifyResult, float_parent
from jmed_edge.convert.fingerprint import gguf_fingerprint
from jmed_edge.convert.ggufinfo import KEY_FILE_TYPE, KEY_TYPE, probe_load, read_gguf
from jmed_edge.convert.kl import open_for_checks
from jmed_edge.convert.llamacpp_convert import converter_version, run_converter
from jmed_edge.convert.progress import LogProgress, Progress
from jmed_edge.errors import ArtifactError, ModelError
from jmed_edge.fsutil import human_bytes, staging_dir
from jmed_edge.manifest import Manifest, parent_record, read_manifest
from jmed_edge.runtimes.base import log_softmax

log = logging.getLogger(__name__)

LORA_FILE = "adapter-F16.gguf"
# Mean KL(peft || GGUF base + GGUF LoRA). Measured ~1e-5 with an F16 base and an fp32 peft model
# (F16 vs fp32 1.1e-5, llama.cpp's batch/thread/CPU spread 6e-6: jmed_edge/testing/numerics.py),
# so 1e-3 is ~60x; a peft model run in bf16/fp16 (a 7B in its stored dtype) is itself ~1e-4..1e-3
# off, so it gets more.
KL_TOL = {"float32": 1e-3, "bfloat16": 5e-3, "float16": 5e-3}
MEANINGFUL = 10  # the adapter's own effect must exceed the conversion error this many times


def adapter_base(adapter: Path) -> Path:
    """The local base model folder of a peft adapter (manifest parent, else adapter_config.json)."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    manifest = read_manifest(adapter, required=False)
    candidates = [manifest.parent.get("path", "")] if manifest and manifest.parent else []
    candidates.append(config.get("base_model_name_or_path") or "")
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.json").exists():
            return Path(candidate)
    raise ArtifactError(
        f"{adapter}: its base model ({candidates[-1] or 'not named'}) is not a local folder; set "
        "base_model_name_or_path in adapter_config.json to the base model's path"
    )


def _float_base(base_gguf: Path, progress: Progress) -> Path:
    """The GGUF file to check against: ``base_gguf`` if 16/32-bit, else the F16 it came from."""
    info = describe(base_gguf)
    if FLOAT_FILE_TYPES.get(read_gguf(info.model_file).get(KEY_FILE_TYPE, -1)):  # type: ignore[arg-type]
        return info.model_file  # type: ignore[return-value]
    parent = float_parent(info.folder)
    if parent is None:
        raise ArtifactError(
            f"{base_gguf} is quantized, which would blur the adapter check; pass the base's F16/BF16 GGUF as --base-gguf"
        )
    progress.note(f"checking the adapter on {parent.name}, the F16 GGUF {info.folder.name} was made from")
    return describe(parent).model_file  # type: ignore[return-value]


def _logits(runtime, id_lists: list[list[int]]) -> list[np.ndarray]:
    return [log_softmax(runtime.logits(ids)) for ids in id_lists]


def _kl(p: list[np.ndarray], q: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([(np.exp(a) * (a - b)).sum(-1) for a, b in zip(p, q, strict=True)])


def check_adapter(adapter: Path, lora_file: Path, base_gguf: Path) -> list[Check]:
    """Base GGUF + GGUF LoRA against the peft model, and the adapter's own effect."""
    from transformers import AutoTokenizer

    base_hf = adapter_base(adapter)
    probe_load(base_gguf, lora_file)
    tok = AutoTokenizer.from_pretrained(base_hf)
    ids = [tok(text)["input_ids"] for text in probes.LOGIT_PROBES]
    runtimes = {"peft": (adapter, {}), "base": (base_hf, {}), "gguf": (base_gguf, {"lora_path": lora_file})}
    out: dict[str, list[np.ndarray]] = {}
    dtype = "float32"
    for name, (path, options) in runtimes.items():  # one model in memory at a time
        runtime = open_for_checks(path, **options)
        try:
            out[name] = _logits(runtime, ids)
            dtype = str(getattr(runtime, "dtype", dtype)) if name == "peft" else dtype
        finally:
            runtime.close()
    tol = KL_TOL.get(dtype, KL_TOL["bfloat16"])
    kl, effect = _kl(out["peft"], out["gguf"]), _kl(out["peft"], out["base"])
    agree = [a.argmax(-1) == b.argmax(-1) for a, b in zip(out["peft"], out["gguf"], strict=True)]
    top1 = float(np.concatenate(agree).mean())
    values = {
        "positions": int(kl.size),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "kl_tol": tol,
        "peft_dtype": dtype,
        "top1": top1,
        "adapter_effect_kl": float(effect.mean()),
    }
    parity = Check(
        "adapter parity",
        bool(kl.mean() <= tol),
        f"base GGUF + GGUF LoRA vs peft on {kl.size} positions: KL {kl.mean():.2e} (tol {tol:.0e}), top-1 {top1:.1%}",
        values,
    )
    meaningful = effect.mean() > MEANINGFUL * kl.mean()
    effect_check = Check(
        "adapter effect",
        None,
        f"peft vs its base: KL {effect.mean():.4f}"
        + ("" if meaningful else " — the adapter barely changes the model, so parity proves little"),
        {"kl_mean": float(effect.mean())},
    )
    return [parity, effect_check]


def _with_base_gguf(adapter: Path, base_gguf: Path | None, progress: Progress, run, work_dir: Path):
    """Call ``run(base_gguf_file)``; without a base GGUF, convert the base to a temporary F16 first
    (in ``work_dir``, which is on the disk the user chose for outputs rather than a small /tmp)."""
    if base_gguf is not None:
        return run(_float_base(Path(base_gguf), progress))
    from jmed_edge.convert.gguf import convert_to_gguf

    base_hf = adapter_base(adapter)
    progress.note(
        f"converting the base {base_hf.name} to a temporary F16 GGUF for the check (pass --base-gguf to reuse one)"
    )
    with tempfile.TemporaryDirectory(prefix=".jmed-lora-base-", dir=work_dir) as tmp:
        folders = convert_to_gguf(base_hf, Path(tmp), quants=(), verify=False, progress=progress)
        return run(describe(folders["F16"]).model_file)


def convert_lora(
    adapter: Path,
    out: Path,
    base_gguf: Path | None = None,
    force: bool = False,
    *,
    verify: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Convert a peft adapter folder to a verified GGUF LoRA artifact at ``out``."""
    progress = progress or LogProgress()
    adapter, out = Path(adapter), Path(out)
    info = describe(adapter)
    if info.format != "peft-adapter":
        raise ArtifactError(
            f"{adapter} is a {info.format} artifact, not a peft LoRA adapter (adapter_config.json)"
        )
    base_hf = adapter_base(adapter)
    lora_config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    with staging_dir(out, force=force) as tmp:
        file = tmp / LORA_FILE
        progress.task(f"LoRA: converting {adapter.name} with llama.cpp", total=None)
        args = [adapter, "--base", base_hf, "--outtype", "f16", "--outfile", file]
        run_converter("convert_lora_to_gguf.py", args, src=adapter, on_progress=progress.advance)
        gguf = read_gguf(file)
        if gguf.get(KEY_TYPE) != "adapter":
            raise ModelError(
                f"llama.cpp's LoRA converter wrote {gguf.get(KEY_TYPE)!r}, not an adapter, from {adapter}"
            )
        progress.finish(f"LoRA: {human_bytes(file.stat().st_size)}, {gguf.n_tensors} tensors")
        result = VerifyResult(out, adapter)
        if verify:
            started = time.perf_counter()
            progress.task(f"LoRA: verifying against the peft model {adapter.name}")
            result.checks = _with_base_gguf(
                adapter, base_gguf, progress, lambda b: check_adapter(adapter, file, b), work_dir=out.parent
            )
            result.seconds = time.perf_counter() - started
            progress.checks("LoRA", result)
            result.raise_for_failures()
        parent = parent_record(adapter)
        details: dict[str, Any] = {
            "file": LORA_FILE,
            "size_bytes": file.stat().st_size,
            "tensors": gguf.n_tensors,
            "base_model": str(base_hf.resolve()),
            "base_gguf": str(Path(base_gguf).resolve()) if base_gguf else None,
            "lora_alpha": lora_config.get("lora_alpha"),
            "rank": lora_config.get("r"),
            "target_modules": lora_config.get("target_modules"),
            "converter": converter_version(),
            "fingerprint": _fingerprint(parent["sha256"]),
        }
        Manifest(
            kind="gguf-lora",
            format="gguf-lora",
            name=f"{info.name}-gguf-lora",
            parent=parent,
            config={"outtype": "f16"},
            license=info.manifest.license if info.manifest else "unknown",
            details=details,
            verification=result.to_dict() if verify else {},
        ).seal(tmp)
    return out


def _fingerprint(parent_sha256: str) -> str:
    return gguf_fingerprint(parent_sha256, "LORA-F16", None, "f16")


def verify_lora(
    artifact: Path, *, base_gguf: Path | None = None, record: bool = False, progress: Progress | None = None
) -> VerifyResult:
    """Re-run the adapter check of a GGUF LoRA artifact against the peft adapter it came from."""
    progress = progress or LogProgress()
    info = describe(Path(artifact))
    manifest = info.manifest
    if manifest is None or not manifest.parent or not Path(manifest.parent.get("path", "")).exists():
        raise ArtifactError(
            f"{artifact}: the peft adapter it came from is unknown or gone; nothing to check against"
        )
    adapter = Path(manifest.parent["path"])
    base = base_gguf or manifest.details.get("base_gguf")
    started = time.perf_counter()
    result = VerifyResult(info.folder, adapter)
    result.checks = _with_base_gguf(
        adapter,
        Path(base) if base else None,
        progress,
        lambda b: check_adapter(adapter, info.model_file, b),
        work_dir=info.folder.parent,
    )
    result.seconds = time.perf_counter() - started
    if record:
        from jmed_edge.fsutil import write_text_atomic
        from jmed_edge.manifest import manifest_path

        manifest.verification = result.to_dict()
        write_text_atomic(manifest_path(info.folder), manifest.to_json())
    return result
