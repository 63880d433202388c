"""Run llama.cpp's converter scripts (HF model or peft adapter -> GGUF) in a child process.

The converter and its ``gguf-py`` come from the llama-cpp-python sdist (see
``llamacpp_tools``); PyPI's ``gguf`` breaks it, and its gguf-py would shadow PyPI's in this
process, so it runs in a child with ``PYTHONPATH`` set to its own folders. It stays in lazy
mode (its default): tensors are read, converted and written one at a time, so peak memory is
about one copy of the largest tensor group rather than of the model.

The converter's registries (architectures, pre-tokenizer names) are read from its source as
literals, so error messages can list them without importing torch or the converter here.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from jmed_edge.convert.llamacpp_tools import LLAMA_CPP_PYTHON, require_converter
from jmed_edge.errors import ConfigError, ModelError, did_you_mean

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("_converter_main.py")
ProgressFn = Callable[[int, int], None]


def converter_version() -> str:
    """What produced the GGUF: the converter is pinned to the bindings' llama.cpp."""
    return f"llama.cpp converter from llama-cpp-python {LLAMA_CPP_PYTHON}"


@cache
def supported_architectures() -> tuple[str, ...]:
    """Text-model architectures the converter registers (``TEXT_MODEL_MAP`` in conversion/__init__.py)."""
    source = (require_converter() / "conversion" / "__init__.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value is not None:
            return tuple(sorted(ast.literal_eval(node.value)))
    raise ModelError("cannot read TEXT_MODEL_MAP from llama.cpp's converter; run: jmed-edge setup --force")


@cache
def known_pre_tokenizers() -> tuple[str, ...]:
    """Pre-tokenizer names the converter's hash table can write (``get_vocab_base_pre``)."""
    source = (require_converter() / "conversion" / "base.py").read_text(encoding="utf-8")
    return tuple(sorted(set(re.findall(r'^\s+res = "([^"]+)"', source, flags=re.M))))


def check_architecture(architecture: str | None, where: Path) -> None:
    known = supported_architectures()
    if architecture in known:
        return
    raise ModelError(
        f"{where}: architecture {architecture or '(none in config.json)'} is not supported by llama.cpp's "
        f"converter{did_you_mean(architecture or '', known)}; supported: {', '.join(known)}"
    )


def check_pre_tokenizer(name: str) -> None:
    known = known_pre_tokenizers()
    if name not in known:
        raise ConfigError(
            f'unknown pre-tokenizer "{name}"{did_you_mean(name, known)}; known: {", ".join(known)}'
        )


def run_converter(
    script: str,
    args: Sequence[str],
    *,
    src: Path,
    pre_tokenizer: str | None = None,
    on_progress: ProgressFn | None = None,
) -> None:
    """Run ``script`` (``convert_hf_to_gguf.py`` or ``convert_lora_to_gguf.py``) with ``args``.

    Raises ``ModelError``/``ConfigError`` with one line on failure; the converter's full log
    is kept at debug level.
    """
    folder = require_converter()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder / "gguf-py"), str(folder)])
    env.pop("NO_LOCAL_GGUF", None)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if pre_tokenizer:
        env["JMED_PRE_TOKENIZER"] = pre_tokenizer
    else:
        env.pop("JMED_PRE_TOKENIZER", None)
    cmd = [sys.executable, "-P", str(RUNNER), str(folder / script), *map(str, args)]
    log.debug("running %s", " ".join(cmd))
    errors: list[str] = []
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("@@progress ") and on_progress:
                done, total = line.split()[1:3]
                on_progress(int(done), int(total))
            elif line.startswith("@@error "):
                errors.append(line.split(" ", 2)[-1].strip())
        code = proc.wait()
        stderr.seek(0)
        log_text = stderr.read()
    log.debug("converter log:\n%s", log_text)
    if code == 0:
        return
    if code == 3:
        raise ModelError(
            f"llama.cpp does not recognise the BPE pre-tokenizer of {src}'s tokenizer (the converter "
            "raised NotImplementedError: BPE pre-tokenizer was not recognized); pass --pre-tokenizer NAME "
            f"with the llama.cpp name whose split regex your tokenizer uses; known: {', '.join(known_pre_tokenizers())}"
        )
    raise ModelError(f"llama.cpp's {script} failed on {src}: {_reason(log_text, errors, code)}")


def _reason(log_text: str, errors: list[str], code: int) -> str:
    if errors:
        return errors[-1]
    lines = [ln.strip() for ln in log_text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):  # the exception line of a traceback, or the last ERROR log line
        if re.match(r"^[A-Za-z_.]+(Error|Exception): ", line) or line.startswith("ERROR:"):
            return line.removeprefix("ERROR:hf-to-gguf:").removeprefix("ERROR:lora-to-gguf:")
    return lines[-1] if lines else f"exit code {code}"
