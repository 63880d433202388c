"""Hugging Face model -> F16/BF16 GGUF -> quantized GGUFs, each a verified artifact folder.

    out/F16/<model>-F16.gguf       + Modelfile + jmed_manifest.json   (parent: the HF folder)
    out/Q4_K_M/<model>-Q4_K_M.gguf + Modelfile + jmed_manifest.json   (parent: out/F16)
    out/imatrix-medical-ja-en.gguf                     (--imatrix auto, the default)

``<model>`` is ``--name`` or the source's manifest name (``naming``); the converter writes it,
the license and jmed-edge as quantizer into ``general.*`` through its ``--metadata`` file, and
the quantizer copies them. Files of earlier versions (``model-<TYPE>.gguf``) are still found:
readers take the folder's one ``.gguf`` or the manifest's ``details.file``.

Conversion is llama.cpp's converter (lazy: about one tensor in memory at a time), quantization
is llama.cpp's quantizer through the bindings; nothing here writes GGUF bytes itself. Both run
in child processes, so a malformed file can crash them but not this process; verification
loads a GGUF in-process only after a child has loaded it (``ggufinfo.probe_load``). Each
artifact is written in a staging folder, verified there (``verify``), and renamed into place
only when every check passed, so a failed or interrupted run leaves nothing half-made.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge.convert import probes
from jmed_edge.convert.fingerprint import gguf_fingerprint
from jmed_edge.convert.ggufinfo import KEY_PRE, read_gguf
from jmed_edge.convert.imatrix import ImatrixData, compute_imatrix, load_imatrix
from jmed_edge.convert.llamacpp_convert import check_pre_tokenizer, converter_version, run_converter
from jmed_edge.convert.mix import MixSpec, build_mix, mix_settings
from jmed_edge.convert.modelfile import record as modelfile_record
from jmed_edge.convert.modelfile import write_modelfile
from jmed_edge.convert.naming import ModelName, check_name, metadata_overrides, model_name
from jmed_edge.convert.progress import LogProgress, Progress
from jmed_edge.convert.quant_types import DEFAULT_QUANTS, QuantType, parse_quants, quant_type
from jmed_edge.convert.quantize import quantize_gguf
from jmed_edge.convert.sources import HFSource, check_hf_source, resolve_source
from jmed_edge.convert.verify import verify_artifact
from jmed_edge.errors import ArtifactError, ConfigError
from jmed_edge.fsutil import ensure_free_space, human_bytes, staging_dir, staging_file
from jmed_edge.manifest import MANIFEST_NAME, Manifest, parent_record, read_manifest

log = logging.getLogger(__name__)

OUTTYPES = ("f16", "bf16")
IMATRIX_FILE = "imatrix-medical-ja-en.gguf"
# Every type whose quantizer takes an importance matrix gets one unless asked not to
# (``--imatrix none``): measured on the default model, Q4_K_M's Japanese KL 0.123 -> 0.089.
IMATRIX_DEFAULT = "auto"


def gguf_file_name(quant: str, model: ModelName | None = None) -> str:
    """``<model>-<TYPE>.gguf``; ``model-<TYPE>.gguf`` (the name earlier versions wrote) without one."""
    return model.file_name(quant) if model else f"model-{quant.upper()}.gguf"


def resolve_name(source: HFSource, name: str | None, progress: Progress) -> ModelName:
    """``--name`` when given, else the source's manifest name (or folder name); file-safe stem announced."""
    given = check_name(name) if name is not None else check_name(source.name, f"the name of {source.path}")
    model = model_name(given, fallback=source.name)
    if model.stem != model.name:
        progress.note(
            f"file names use {model.stem!r}: {model.name!r} has characters outside A-Z a-z 0-9 . _ -; "
            "general.name keeps it as given"
        )
    return model


def up_to_date(folder: Path, fingerprint: str) -> bool:
    """Whether ``folder`` holds an artifact with this fingerprint (for a pipeline's skip)."""
    manifest = (
        read_manifest(Path(folder), required=False) if (Path(folder) / MANIFEST_NAME).exists() else None
    )
    return bool(manifest and manifest.details.get("fingerprint") == fingerprint)


def estimate_bytes(source: HFSource, outtype: str, quants: list[QuantType]) -> int:
    """Disk the run writes: the 16-bit GGUF plus each type at its nominal bits per weight (+10%)."""
    base = source.n_params * 2
    return int(base + sum(source.n_params * q.bpw / 8 * 1.1 for q in quants) + 16 * 1024**2)


def _pre_tokenizer(explicit: str | None, source: HFSource, progress: Progress) -> tuple[str | None, str]:
    if explicit:
        check_pre_tokenizer(explicit)
        progress.note(f"pre-tokenizer {explicit!r} (--pre-tokenizer) overrides llama.cpp's hash lookup")
        return explicit, "--pre-tokenizer"
    declared = source.declared_pre_tokenizer
    if declared:
        check_pre_tokenizer(declared)
        progress.note(
            f"pre-tokenizer {declared!r}, declared by {source.path.name}'s manifest (details.pre_tokenizer)"
        )
        return declared, "source manifest"
    return None, "llama.cpp hash lookup"


def imatrix_setting(imatrix: str | Path | None) -> str | Path:
    """``None`` (not given) is the default, ``"auto"``; ``"none"`` opts out; anything else is a file."""
    if imatrix is None or str(imatrix) == IMATRIX_DEFAULT:
        return IMATRIX_DEFAULT
    if str(imatrix) == "none":
        return "none"
    return Path(imatrix).expanduser()


def imatrix_mode_for(imatrix: str | Path | None, q: QuantType) -> str | None:
    """What ``config.imatrix`` of type ``q``'s artifact says for this setting: auto, file or None."""
    setting = imatrix_setting(imatrix)
    if not q.uses_imatrix or setting == "none":
        return None
    return "auto" if setting == IMATRIX_DEFAULT else "file"


def _imatrix_mode(
    imatrix: str | Path | None, quants: list[QuantType], progress: Progress, mixes: Sequence[str] = ()
) -> str | Path | None:
    setting = imatrix_setting(imatrix)
    takers = [q.name for q in quants if q.uses_imatrix] + list(mixes)
    if setting == "none":
        needing = [q.name for q in quants if q.imatrix == "required"]
        if needing:
            raise ConfigError(
                f"{', '.join(needing)} need an importance matrix; pass --imatrix auto (computed from the "
                "bundled ja/en medical text) or --imatrix FILE"
            )
        if takers:
            progress.note(f"--imatrix none: {', '.join(takers)} quantized without an importance matrix")
        return None
    if not takers:
        if imatrix is not None:
            progress.note("--imatrix is ignored: none of the requested types uses an importance matrix")
        return None
    how = (
        "--imatrix auto (the default; --imatrix none opts out)" if imatrix is None else f"--imatrix {imatrix}"
    )
    progress.note(f"importance matrix for {', '.join(takers)}: {how}")
    return setting


def _refuse_existing(folders: list[Path], force: bool) -> None:
    existing = [f for f in folders if f.exists()]
    if existing and not force:
        names = ", ".join(str(f) for f in existing)
        raise ArtifactError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}; pass --force to replace"
        )


def _verify(staged: Path, dest: Path, source: HFSource, progress: Progress, **kw: Any) -> dict[str, Any]:

    progress.task(f"{dest.name}: verifying against {source.path.name}")
    result = verify_artifact(staged, against=source.path, **kw)
    progress.checks(dest.name, result)
    result.artifact = dest  # name the final folder in messages, not the staging one
    result.raise_for_failures()
    return result.to_dict()


def _seal_verified(manifest: Manifest, staged: Path, verify) -> None:
    """Seal first (so the staged folder is a recognisable artifact the runtimes can open), then
    verify, then record the result; the files do not change in between, so one hashing pass."""
    manifest.seal(staged)
    manifest.verification = verify()
    (staged / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")


def _modelfile(folder: Path, file: Path, source: HFSource, progress: Progress) -> dict[str, Any]:
    """Write the Ollama Modelfile beside ``file``; a template it cannot translate is announced."""
    found = write_modelfile(folder, file, source.path)
    if found.family is None:
        progress.note(
            f"Modelfile uses Ollama's raw template: the chat template was not translated ({found.reason})"
        )
    return modelfile_record(found)


def _details(file: Path, quant: str, **extra: Any) -> dict[str, Any]:
    info = read_gguf(file)
    return {
        "quant": quant,
        "file": file.name,
        "size_bytes": file.stat().st_size,
        "bits_per_weight": round(info.bits_per_weight, 3),
        "n_params": info.n_params,
        "tensors": info.n_tensors,
        "architecture": info.get("general.architecture"),
        "pre_tokenizer": info.get(KEY_PRE),
        "converter": converter_version(),
        **extra,
    }


def _convert_base(
    source: HFSource,
    dest: Path,
    outtype: str,
    pre: tuple[str | None, str],
    model: ModelName,
    *,
    force: bool,
    verify: bool,
    progress: Progress,
) -> Path:
    quant = outtype.upper()
    license_ = source.manifest.license if source.manifest else "unknown"
    with staging_dir(dest, force=force) as tmp, tempfile.TemporaryDirectory(prefix="jmed-meta-") as meta:
        file = tmp / gguf_file_name(quant, model)
        progress.task(f"{quant}: converting {source.name} with llama.cpp", total=None)
        overrides = metadata_overrides(model, license_)
        metadata = Path(meta) / "metadata.json"
        metadata.write_text(json.dumps(overrides, ensure_ascii=False), encoding="utf-8")
        args = [source.path, "--outtype", outtype, "--outfile", file, "--metadata", metadata]
        run_converter(
            "convert_hf_to_gguf.py", args, src=source.path, pre_tokenizer=pre[0], on_progress=progress.advance
        )
        parent = parent_record(source.path)
        details = _details(
            file,
            quant,
            pre_tokenizer_source=pre[1],
            imatrix=None,
            source=str(source.path),
            model_name=model.name,
            metadata=overrides,
            modelfile=_modelfile(tmp, file, source, progress),
            fingerprint=gguf_fingerprint(parent["sha256"], quant, None, outtype, pre_tokenizer=pre[0]),
        )
        progress.finish(
            f"{quant}: {file.name}, {human_bytes(details['size_bytes'])}, {details['bits_per_weight']} bits/weight"
        )
        manifest = Manifest(
            kind="gguf",
            format="gguf",
            name=f"{model.name}-{quant}",
            parent=parent,
            config={"outtype": outtype, "pre_tokenizer": pre[0]},
            license=license_,
            details=details,
        )
        _seal_verified(manifest, tmp, lambda: _verify(tmp, dest, source, progress) if verify else {})
    return dest


@dataclass
class _Imatrix:
    data: ImatrixData
    record: dict[str, Any]  # what a manifest's details.imatrix says
    key: str  # its part of the fingerprint


def _imatrix(mode: str | Path, base_dir: Path, source: HFSource, progress: Progress) -> _Imatrix:
    if mode != "auto":
        data = load_imatrix(Path(mode))
        progress.note(f"importance matrix {mode} ({len(data.entries)} tensors, {data.chunk_count} chunks)")
        record = {"mode": "file", "path": str(Path(mode).resolve()), **data.record()}
        return _Imatrix(data, record, record["sha256"])
    from transformers import AutoTokenizer

    corpus, calibration = probes.calibration_corpus()
    n_tokens = len(AutoTokenizer.from_pretrained(source.path)(corpus)["input_ids"])
    base_file = base_dir / read_manifest(base_dir).details["file"]  # type: ignore[union-attr]
    info = read_gguf(base_file)
    n_ctx_train = int(info.get(f"{info.get('general.architecture')}.context_length", 0) or 0)
    progress.task("imatrix: llama-imatrix over the ja/en medical calibration text", total=None)
    dest = base_dir.parent / IMATRIX_FILE
    with staging_file(dest) as tmp:
        data = compute_imatrix(
            base_file, corpus, tmp, n_tokens=n_tokens, n_ctx_train=n_ctx_train, on_progress=progress.advance
        )
    dest.chmod(0o644)  # staged through mkstemp (0600); it is a shareable result like the GGUFs
    data.path = dest
    calibration.update(tokens=n_tokens, chunks=data.chunk_count, chunk_size=data.chunk_size)
    progress.finish(f"imatrix: {data.chunk_count} chunks x {data.chunk_size} tokens of ja+en medical text")
    record = {"mode": "auto", "path": str(dest), **data.record(), "calibration": calibration}
    return _Imatrix(data, record, f"auto:{calibration['sha256']}")


def _quantize_one(
    q: QuantType,
    base_dir: Path,
    dest: Path,
    source: HFSource,
    imatrix: _Imatrix | None,
    model: ModelName,
    *,
    force: bool,
    verify: bool,
    progress: Progress,
    texts_by_lang: dict[str, str] | None,
) -> Path:
    base = read_manifest(base_dir)
    assert base is not None
    used = imatrix if q.uses_imatrix else None
    with staging_dir(dest, force=force) as tmp:
        file = tmp / gguf_file_name(q.name, model)
        progress.task(f"{q.name}: quantizing" + (" with the importance matrix" if used else ""), total=None)
        warnings = quantize_gguf(
            base_dir / base.details["file"], file, q, imatrix=used and used.data, on_progress=progress.advance
        )
        fingerprint = gguf_fingerprint(
            base.sha256,
            q.name,
            used and used.key,
            base.config.get("outtype", "f16"),
            pre_tokenizer=base.config.get("pre_tokenizer"),
        )
        details = _details(
            file,
            q.name,
            imatrix=used and used.record,
            imatrix_used=used is not None,
            source=str(source.path),
            model_name=model.name,
            modelfile=_modelfile(tmp, file, source, progress),
            nominal_bpw=q.bpw,
            llama_cpp_warnings=warnings[:5],
            fingerprint=fingerprint,
        )
        progress.finish(
            f"{q.name}: {file.name}, {human_bytes(details['size_bytes'])}, {details['bits_per_weight']} bits/weight"
        )
        config = {"quant": q.name, "imatrix": used and used.record["mode"]}
        _seal_quantized(tmp, dest, base_dir, source, f"{model.name}-{q.name}", config, details,
                        verify=verify, progress=progress, texts_by_lang=texts_by_lang)  # fmt: skip
    return dest


def _seal_quantized(
    tmp: Path,
    dest: Path,
    base_dir: Path,
    source: HFSource,
    name: str,
    config: dict,
    details: dict,
    *,
    verify: bool,
    progress: Progress,
    texts_by_lang: dict[str, str] | None,
) -> None:
    """The manifest of a type made from the F16 in ``base_dir`` (uniform or mixed), checked
    against it (KL) when ``verify``, written into ``tmp`` before it becomes ``dest``."""
    base = read_manifest(base_dir)
    assert base is not None
    manifest = Manifest(kind="gguf", format="gguf", name=name, parent=parent_record(base_dir),
                        config=config, license=base.license, details=details)  # fmt: skip
    _seal_verified(
        manifest,
        tmp,
        lambda: (
            _verify(tmp, dest, source, progress, reference=base_dir, texts_by_lang=texts_by_lang)
            if verify
            else {}
        ),
    )


def _mix_one(
    spec: MixSpec,
    base_dir: Path,
    dest: Path,
    source: HFSource,
    imatrix: _Imatrix | None,
    model: ModelName,
    *,
    force: bool,
    verify: bool,
    progress: Progress,
    texts_by_lang: dict[str, str] | None,
) -> Path:
    base = read_manifest(base_dir)
    assert base is not None
    with staging_dir(dest, force=force) as tmp:
        file = tmp / gguf_file_name(spec.label, model)
        built = build_mix(
            base_dir / base.details["file"],
            file,
            spec,
            imatrix=imatrix and imatrix.data,
            cache=base_dir.parent / "mix-sensitivity.json",
            progress=progress,
        )
        details = _details(
            file,
            spec.label,
            imatrix=imatrix and imatrix.record,
            imatrix_used=imatrix is not None,
            source=str(source.path),
            model_name=model.name,
            modelfile=_modelfile(tmp, file, source, progress),
            mix=built.record,
            llama_cpp_warnings=built.warnings[:5],
        )
        config = {
            "quant": spec.label,
            "imatrix": imatrix and imatrix.record["mode"],
            "mix": mix_settings(spec),
        }
        _seal_quantized(tmp, dest, base_dir, source, f"{model.name}-{spec.label}", config, details,
                        verify=verify, progress=progress, texts_by_lang=texts_by_lang)  # fmt: skip
    return dest


def convert_to_gguf(
    src: str | Path,
    out_dir: Path,
    quants=DEFAULT_QUANTS,
    imatrix: str | Path | None = IMATRIX_DEFAULT,
    outtype: str = "f16",
    force: bool = False,
    verify: bool = True,
    pre_tokenizer: str | None = None,
    *,
    name: str | None = None,
    progress: Progress | None = None,
    texts_by_lang: dict[str, str] | None = None,
    mixes: Sequence[MixSpec] = (),
) -> dict[str, Path]:
    """Convert ``src`` (an HF folder or ``"default"``) to GGUF and quantize it.

    Returns ``{"F16": folder, "Q8_0": folder, ...}``. ``imatrix``: ``"auto"`` (the default; also
    what None means), ``"none"`` or a file; applied to every type whose quantizer takes one
    (``quant_types``), recorded per artifact (``config.imatrix``, ``details.imatrix``). ``texts_by_lang``: texts for
    the quantization-loss measurement (default: held-out calibration text). ``name``: the
    model name in file names and ``general.name`` (default: the source's manifest name).
    """
    progress = progress or LogProgress()
    if name is not None:
        check_name(name)  # before any work: a bad --name is a one-line error, not a late one
    if outtype.lower() not in OUTTYPES:
        raise ConfigError(f'--outtype must be one of {", ".join(OUTTYPES)}, not "{outtype}"')
    outtype = outtype.lower()
    source = check_hf_source(resolve_source(src))
    parsed = parse_quants(quants)
    other_floats = [q.name for q in parsed if q.is_float and q.name != quant_type(outtype).name]
    if other_floats:
        raise ConfigError(
            f"{', '.join(other_floats)} is an unquantized type, made with --outtype "
            f"{other_floats[0].lower()} (the base every quant is made from), not with --quant"
        )
    qtypes = [q for q in parsed if not q.is_float]
    mode = _imatrix_mode(imatrix, qtypes, progress, [m.label for m in mixes])
    if isinstance(mode, Path):
        load_imatrix(mode)  # fail before converting when the file is not an imatrix
    model = resolve_name(source, name, progress)
    pre = _pre_tokenizer(pre_tokenizer, source, progress)
    out_dir = Path(out_dir)
    base_dir = out_dir / quant_type(outtype).name
    targets = {q.name: out_dir / q.name for q in qtypes} | {m.label: out_dir / m.label for m in mixes}
    _refuse_existing([base_dir, *targets.values()], force)
    ensure_free_space(out_dir, estimate_bytes(source, outtype, qtypes), f"converting {source.name} to GGUF")
    done = {
        base_dir.name: _convert_base(
            source, base_dir, outtype, pre, model, force=force, verify=verify, progress=progress
        )
    }
    im = _imatrix(mode, base_dir, source, progress) if mode is not None else None
    for q in qtypes:
        done[q.name] = _quantize_one(
            q,
            base_dir,
            targets[q.name],
            source,
            im,
            model,
            force=force,
            verify=verify,
            progress=progress,
            texts_by_lang=texts_by_lang,
        )
    for spec in mixes:
        done[spec.label] = _mix_one(
            spec,
            base_dir,
            targets[spec.label],
            source,
            im,
            model,
            force=force,
            verify=verify,
            progress=progress,
            texts_by_lang=texts_by_lang,
        )
    return done
