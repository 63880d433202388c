"""Hugging Face folder -> one verified ONNX folder per precision (``DIR/onnx-int4`` ...).

Everything that can be checked before building is (architecture, options, target, tokenizer
files, free disk); the exporter then builds every precision in one subprocess, and each
precision is verified and sealed on its own in a staging folder, so a failure of one never
leaves a half-written folder and never discards the others. A folder whose manifest carries the
same input fingerprint is up to date and is not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jmed_edge.convert.onnx.exporters import BuildJob, get_exporter
from jmed_edge.convert.onnx.options import (
    QUANTIZED,
    OnnxOptions,
    check_request,
    check_target_available,
)
from jmed_edge.convert.onnx.source import TOKENIZER_FILES, SourceModel, load_source, resolve_source
from jmed_edge.errors import ArtifactError, JmedError, ModelError
from jmed_edge.fsutil import dir_size, ensure_free_space, human_bytes, staging_dir
from jmed_edge.manifest import Manifest, check_files, parent_record, read_manifest
from jmed_edge.memory import RUNTIME_BYTES, ensure_ram

log = logging.getLogger(__name__)

FINGERPRINT_SCHEMA = 1  # bump when the folder layout written here changes
# Bytes per parameter of the decoder body on disk; quantized weights carry one fp32 scale per
# block (4 / block_size bytes per weight). Embeddings are counted at fp32 for quantized models:
# the builder keeps an untied embedding table unquantized.
_BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}


def _as_options(options: OnnxOptions | dict[str, Any] | None) -> OnnxOptions:
    return options if isinstance(options, OnnxOptions) else OnnxOptions.from_dict(options)


def _as_precisions(precisions: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(precisions, str):
        precisions = precisions.split(",")
    return tuple(dict.fromkeys(p.strip().lower() for p in precisions if p.strip()))


def _fingerprint(source_sha256: str, precision: str, target: str, exporter: str, version: str,
                 options: OnnxOptions) -> str:  # fmt: skip
    payload = {"schema": FINGERPRINT_SCHEMA, "source": source_sha256, "precision": precision, "target": target,
               "exporter": exporter, "exporter_version": version, "options": options.to_dict()}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def onnx_fingerprint(
    src: Path | str,
    precision: str,
    *,
    target: str = "cpu",
    exporter: str = "genai-builder",
    options: OnnxOptions | dict[str, Any] | None = None,
) -> str:
    """Hash of everything an ONNX folder depends on: source content, precision, target, exporter
    and its version, options. Equal fingerprints mean an existing folder is up to date."""
    source = resolve_source(src)
    return _fingerprint(parent_record(source)["sha256"], precision, target, exporter,
                        get_exporter(exporter).version(), _as_options(options))  # fmt: skip


def estimate_bytes(source: SourceModel, precision: str, options: OnnxOptions) -> int:
    """Rough size of one exported folder, for the free-space check before building."""
    if precision not in QUANTIZED:
        return int(source.n_params * _BYTES_PER_PARAM[precision])
    per_param = _BYTES_PER_PARAM[precision] + 4 / options.block_size
    embeddings = source.vocab_size * source.hidden_size
    heads = 1 if source.tied and options.lm_head != "fp32" else 2
    body = max(source.n_params - embeddings * (1 if source.tied else 2), 0)
    return int(body * per_param + heads * embeddings * 4)


def streams_quantization(options: OnnxOptions, precision: str) -> bool:
    """Whether the builder's int8/int4 weights go through ``streaming`` (weight by weight) rather
    than its own whole-graph step (the other algorithms and a differently quantized lm_head)."""
    mixed = options.lm_head in QUANTIZED and options.lm_head != precision  # matmul_mixed_precision
    raw = {k.lower() for k in options.builder_options} & {"use_qdq", "matmul_mixed_precision", "algo_config"}
    return options.algorithm == "default" and not mixed and not raw


def estimate_peak_ram(source: SourceModel, precision: str, options: OnnxOptions) -> int:
    """Peak RAM of the builder process exporting ``source`` at ``precision``, from the measured
    ratios (benchmarks/perf/scale.py, bf16 random models of real shapes, 2-core CPU)."""
    largest_fp32 = 4 * source.largest
    if precision in QUANTIZED and streams_quantization(options, precision):
        # Python + torch + onnxruntime, then the largest float tensor (an embedding table kept in
        # fp32, or the lm_head being quantized) twice: once cast, once while written. Measured
        # 7B shape int4 and int8 3.73 GB (this bound 5.0 GB); 0.5B shape int4 0.84 GB,
        # int8 1.22 GB (bound 1.7 GB).
        return RUNTIME_BYTES + 2 * largest_fp32
    if precision in QUANTIZED:
        # The builder's whole-graph step: 4.7x (int4) and 5.6x (int8) the bf16 model at 0.5B.
        return RUNTIME_BYTES + int(5.6 * source.weight_bytes)
    # fp32/fp16: each weight read once through the mapped checkpoint, which stays resident.
    return RUNTIME_BYTES + source.weight_bytes + 2 * largest_fp32


def _up_to_date(dest: Path, fingerprint: str) -> Manifest | None:
    manifest = read_manifest(dest, required=False) if dest.is_dir() else None
    if manifest is None or manifest.details.get("fingerprint") != fingerprint or check_files(dest, manifest):
        return None
    return manifest


def complete_tokenizer_files(source: Path, folder: Path) -> list[str]:
    """Copy tokenizer files the exporter left out and put the chat template where every loader
    looks (``chat_template.jinja`` and ``tokenizer_config.json``). Returns the files copied."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).exists() and not (folder / name).exists():
            shutil.copy2(source / name, folder / name)
            copied.append(name)
    template = None
    if (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    if template is None and isinstance(config.get("chat_template"), str):
        template = config["chat_template"]
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    if template is not None and config.get("chat_template") != template:
        config["chat_template"] = template  # transformers 4.x and other tools read it from here
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return copied


def convert_to_onnx(
    src: Path | str,
    out_dir: Path | str,
    precisions: str | Iterable[str] = ("fp32", "int8", "int4"),
    *,
    target: str = "cpu",
    exporter: str = "genai-builder",
    options: OnnxOptions | dict[str, Any] | None = None,
    force: bool = False,
    verify: bool = True,
    progress: bool = True,
) -> dict[str, Path]:
    """Export ``src`` (an HF folder, or ``"default"``) to ``out_dir/onnx-<precision>`` folders.

    Returns precision -> folder, including folders that were already up to date. Raises a
    ``JmedError`` (after finishing the other precisions) when a precision fails to build or,
    for fp32/fp16, fails verification.
    """
    opts = _as_options(options)
    wanted = _as_precisions(precisions)
    source = load_source(src)
    exp = get_exporter(exporter)
    problems = exp.source_problems(source)
    if problems:
        raise ModelError(f"{source.path}: {'; '.join(problems)}")
    check_request(opts, wanted, target, source.tied)
    if verify:
        check_target_available(target)
    else:
        log.warning("not verifying: the %s artifacts are not checked against %s", target, source.path)
    out_dir = Path(out_dir)
    parent = parent_record(source.path)
    version = exp.version()
    results: dict[str, Path] = {}
    pending: list[tuple[str, Path, str]] = []
    for precision in wanted:
        dest = out_dir / f"onnx-{precision}"
        fingerprint = _fingerprint(parent["sha256"], precision, target, exporter, version, opts)
        existing = None if force else _up_to_date(dest, fingerprint)
        if existing is not None:
            log.info("%s is up to date (same source, options and exporter); not rebuilding it", dest)
            if verify and not existing.verification:
                from jmed_edge.convert.onnx.verify import verify_onnx

                verify_onnx(dest, source.path, precision=precision, record=True)
            results[precision] = dest
        elif dest.exists() and not force:
            raise ArtifactError(
                f"{dest} exists but was made from other inputs (source, options or exporter differ); "
                "pass --force to rebuild it or pick another --out"
            )
        else:
            pending.append((precision, dest, fingerprint))
    if not pending:
        return results
    out_dir.mkdir(parents=True, exist_ok=True)
    needed = sum(estimate_bytes(source, p, opts) for p, _, _ in pending)
    what = f"ONNX export ({', '.join(p for p, _, _ in pending)})"
    ensure_free_space(out_dir, needed, what)
    ensure_ram(
        max(estimate_peak_ram(source, p, opts) for p, _, _ in pending),
        f"{what} of {human_bytes(source.weight_bytes)} of weights",
        "close other programs, or export on a machine with more RAM",
    )
    workdir = Path(tempfile.mkdtemp(prefix=".onnx-build.partial-", dir=out_dir))
    errors: list[JmedError] = []
    try:
        jobs = [BuildJob(p, workdir / p, opts) for p, _, _ in pending]
        for job in jobs:
            job.out.mkdir()
        outcomes = exp.build(source, jobs, target, workdir=workdir, log_path=out_dir / "onnx-build.log",
                             progress=progress)  # fmt: skip
        reference = None
        for (precision, dest, fingerprint), outcome in zip(pending, outcomes, strict=True):
            if not outcome.ok:
                errors.append(ModelError(outcome.error))
                continue
            try:
                with staging_dir(dest, force=force) as tmp:
                    for item in (workdir / precision).iterdir():
                        item.rename(tmp / item.name)
                    complete_tokenizer_files(source.path, tmp)
                    manifest = _manifest(
                        source, parent, precision, target, exp, opts, fingerprint, outcome, tmp
                    )
                    if verify:
                        from jmed_edge.convert.onnx.verify import SourceReference, verify_onnx

                        if reference is None:
                            log.info("computing the source's logits on the verification texts")
                            reference = SourceReference.compute(source.path)
                        result = verify_onnx(tmp, source.path, reference=reference, precision=precision,
                                             raise_on_failure=False)  # fmt: skip
                        manifest.verification = result.to_dict()
                        for line in result.lines():
                            log.debug("onnx-%s %s", precision, line)
                        result.raise_if_failed()
                    manifest.seal(tmp)
                results[precision] = dest
            except JmedError as exc:
                errors.append(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        written = ", ".join(f"onnx-{p}" for p in results) or "none"
        raise type(errors[0])("; ".join(str(e) for e in errors) + f" (written: {written})")
    return results


def _manifest(source: SourceModel, parent: dict[str, Any], precision: str, target: str, exp, opts: OnnxOptions,
              fingerprint: str, outcome, folder: Path) -> Manifest:  # fmt: skip
    source_manifest = read_manifest(source.path, required=False)
    name = source_manifest.name if source_manifest and source_manifest.name else source.path.name
    size = dir_size(folder)
    genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
    resolved = opts.resolved(target, source.tied)
    return Manifest(
        kind="onnx",
        format="onnx",
        name=f"{name}-onnx-{precision}",
        parent=parent,
        config={"precision": precision, "target": target, "exporter": exp.name, "options": resolved},
        license=source_manifest.license if source_manifest else "unknown",
        details={
            "precision": precision,
            "exporter": exp.name,
            "exporter_version": exp.version(),
            "target": target,
            "options": resolved,
            "size_bytes": size,
            "size": human_bytes(size),
            "fingerprint": fingerprint,
            "model_file": genai["decoder"]["filename"],
            "context_length": genai.get("context_length"),
            "source": source.summary(),
            "build_seconds": round(outcome.seconds, 1),
            **outcome.details,
        },
    )
