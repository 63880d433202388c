"""What a user reads is the project's own output, and no dependency reaches for a hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jmed_edge.libraries import LIBRARY_LOGGERS, route_library_output

LIBRARY_NOISE = ("WARNING", "FutureWarning", "DeprecationWarning", "UserWarning", "Loading weights", "it/s]")


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(mark in line for mark in LIBRARY_NOISE)]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "USE_HUB"))}
    env.update({"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
                "KERNELS_CACHE": str(tmp_path / "kernels"), "JMED_EDGE_DEBUG": "0", **extra})  # fmt: skip
    return env


@pytest.mark.slow
def test_cli_run_prints_no_library_warnings_or_bars(tmp_path: Path, tiny_llama: Path) -> None:
    from test_pipeline import _recipe

    recipe = _recipe(tmp_path, tiny_llama)
    cmd = [sys.executable, "-m", "jmed_edge", "run", str(recipe), "--out", str(tmp_path / "run")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env=_env(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert _noise(result.stderr) == [] and _noise(result.stdout) == []
    assert "recommended:" in result.stdout and "llama_context" not in result.stderr
    assert not (tmp_path / "hf-home").exists()  # nothing looked up or cached from a hub


def test_library_warnings_go_to_the_log_file_and_debug_shows_them(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import logging, sys, warnings
        from pathlib import Path
        from jmed_edge.libraries import route_library_output
        route_library_output(debug=sys.argv[1] == "debug", path=Path(sys.argv[2]))
        warnings.warn("`past_key_values` is deprecated", FutureWarning)
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
        logging.getLogger("jmed_edge.convert").warning("pre-tokenizer guessed from the hash table")
        """
    )
    log = tmp_path / "jmed-edge.log"
    quiet = subprocess.run([sys.executable, "-c", script, "quiet", str(log)], capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == ["warning: pre-tokenizer guessed from the hash table"]
    logged = log.read_text(encoding="utf-8")
    assert "past_key_values" in logged and "gemm_4bit_forward" in logged
    debug = subprocess.run([sys.executable, "-c", script, "debug", str(log)], capture_output=True, text=True)
    assert "FutureWarning" in debug.stderr and "WARNING bitsandbytes.backends.cpu.ops" in debug.stderr


def test_route_is_idempotent() -> None:
    import logging

    route_library_output(path=Path(os.devnull))
    route_library_output(path=Path(os.devnull))
    root = [h for h in logging.getLogger().handlers if getattr(h, "_jmed_edge", False)]
    assert len(root) == 1
    for name in LIBRARY_LOGGERS:
        assert len([h for h in logging.getLogger(name).handlers if getattr(h, "_jmed_edge", False)]) == 1


# A QLoRA step in a fresh process with an audit hook on every network call. bitsandbytes' CPU
# backend asks for hub kernels only on CPUs with AVX-512 BF16; the script forces that branch
# (re-running the backend's registration with the CPU check answering yes) so the test means the
# same on every CPU. Online mode (HF_HUB_OFFLINE=0): nothing may connect even when it could.
QLORA_STEP = """
import json, sys
from pathlib import Path

calls = []
sys.addaudithook(lambda event, args: calls.append(f"{event} {args!r:.120}")
                 if event.startswith(("socket.", "urllib.")) else None)

import jmed_edge  # blocks the hub-kernel import before any dependency loads
import importlib
import bitsandbytes.functional as bnb_functional
import bitsandbytes.backends.cpu.ops as cpu_ops

bnb_functional.has_avx512bf16 = lambda: True
importlib.reload(cpu_ops)
hub_kernel = cpu_ops.gemm_4bit_forward_kernel

from jmed_edge.train import run_training

adapter = run_training(Path(sys.argv[1]), out=Path(sys.argv[2]), progress=False)
print(json.dumps({"calls": calls, "hub_kernel": hub_kernel is not None, "adapter": str(adapter)}))
"""


@pytest.mark.slow
def test_qlora_step_on_cpu_opens_no_socket_and_writes_no_hub_cache(tmp_path: Path, tiny_llama: Path) -> None:
    from test_train import _write_recipe

    recipe = _write_recipe(tmp_path, tiny_llama, model={"quantization": "nf4"}, train={"max_steps": 1})
    env = _env(tmp_path, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")
    result = subprocess.run([sys.executable, "-c", QLORA_STEP, str(recipe), str(tmp_path / "adapter")],
                            capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["calls"] == []
    assert outcome["hub_kernel"] is False  # bitsandbytes fell back to its built-in CPU kernels
    assert (Path(outcome["adapter"]) / "adapter_config.json").is_file()
    for cache in (tmp_path / "hf-home", tmp_path / "kernels"):
        assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))
    assert (
        "Skipping publisher trust check" not in result.stderr and "Download the kernel" not in result.stderr
    )
