"""Shared pieces of the TUI tests (no tests here): a fixed artifact root and scripted model runtimes.

The scripted backend keeps every library call real except the model itself: chat goes through
``ChatSession``, bench through ``run_benchmark`` (resumable predictions, summaries), the report
through ``build_report``. Only token streams and option scores are scripted, so snapshots hold
no timings and the tests run in seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from jmed_edge.artifacts import describe
from jmed_edge.errors import ModelError
from jmed_edge.manifest import Manifest
from jmed_edge.runtimes.base import ContinuationScore, GenerationStats, SamplingParams
from jmed_edge.tui.backend import Backend

CREATED = "2026-01-15T09:30:00+0900"
KB = 1024

# name, folder, quant, size in bytes: a merged model, its GGUFs, an adapter and an ONNX export.
GGUFS = (
    ("medllm-F16", "F16", 270 * KB),
    ("medllm-Q8_0", "Q8_0", 144 * KB),
    ("medllm-Q4_K_M", "Q4_K_M", 82 * KB),
)

# Scripted answers (Japanese and English) and decode speeds per artifact name.
REPLIES = {
    "medllm-F16": (
        "高血圧の第一選択薬には、ACE阻害薬、ARB、カルシウム拮抗薬、サイアザイド系利尿薬があります。",
        31.5,
    ),
    "medllm-Q4_K_M": ("第一選択薬はACE阻害薬、ARB、Ca拮抗薬、利尿薬です。合併症に応じて選びます。", 58.2),
}
DEFAULT_REPLY = ("First-line drugs are ACE inhibitors, ARBs, calcium channel blockers and thiazides.", 40.0)
# Share of jmed-sample questions each scripted scorer answers right (the rest: a fixed wrong letter).
SKILL = {"medllm-F16": 0.75, "medllm-Q8_0": 0.73, "medllm-Q4_K_M": 0.6}


def _seal(folder: Path, **fields: Any) -> None:
    manifest = Manifest(**fields)
    manifest.created = CREATED
    manifest.versions = {"jmed-edge": "0.1.0"}
    manifest.seal(folder)


def build_root(base: Path) -> Path:
    """``base/runs`` with six artifacts of fixed names, sizes and dates (parents named relatively)."""
    root = base / "runs"
    merged = root / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    (merged / "model.safetensors").write_bytes(b"\0" * 540 * KB)
    _seal(merged, kind="model", format="hf-safetensors", name="medllm-merged", details={"dtype": "float32"},
          parent={"path": "runs/adapter", "kind": "adapter", "sha256": "0" * 64})  # fmt: skip
    adapter = root / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 9 * KB)
    _seal(adapter, kind="adapter", format="peft-adapter", name="medllm-lora")
    verified = {"passed": True, "checks": [{"name": "tokenizer", "passed": True},
                                           {"name": "chat template", "passed": True},
                                           {"name": "logits", "passed": True}]}  # fmt: skip
    for name, quant, size in GGUFS:
        folder = root / "gguf" / quant
        folder.mkdir(parents=True)
        (folder / f"{name}.gguf").write_bytes(b"GGUF" + b"\0" * size)
        _seal(folder, kind="gguf", format="gguf", name=name, details={"quant": quant},
              verification=verified if quant != "Q4_K_M" else {},
              parent={"path": "runs/merged", "kind": "model", "sha256": "0" * 64})  # fmt: skip
    onnx = root / "onnx" / "int4"
    onnx.mkdir(parents=True)
    (onnx / "model.onnx").write_bytes(b"\0" * 86 * KB)
    _seal(onnx, kind="onnx", format="onnx", name="medllm-onnx-int4", details={"precision": "int4"},
          parent={"path": "runs/merged", "kind": "model", "sha256": "0" * 64})  # fmt: skip
    return root


class ScriptedRuntime:
    """A runtime whose answers are scripted: chat replies stream piece by piece; options score by skill."""

    name = "scripted"
    context_length = 4096

    def __init__(self, path: Path, name: str, *, delay: float = 0.0) -> None:
        self.artifact = path
        self.model_name = name
        self.reply, self.rate = REPLIES.get(name, DEFAULT_REPLY)
        self.delay = delay
        self.skill = SKILL.get(name, 0.5)
        self.closed = False
        self._gold: dict[str, tuple[str, str]] | None = None

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return list(text.encode())[: max(1, len(text) // 2)]

    def render_chat(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def generate(
        self, prompt: str, params: SamplingParams, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        stats.prompt_tokens = len(self.tokenize(prompt))
        stats.finish_reason = "length"
        pieces = [self.reply[i : i + 3] for i in range(0, len(self.reply), 3)]
        for i, piece in enumerate(pieces[: params.max_tokens]):
            if self.delay:
                time.sleep(self.delay)
            stats.completion_tokens = i + 1
            stats.decode_seconds = (i + 1) / self.rate
            yield piece
        if len(pieces) <= params.max_tokens:
            stats.finish_reason = "stop"

    def _gold_answers(self) -> dict[str, tuple[str, str]]:
        if self._gold is None:
            from jmed_edge.bench import load_benchmark

            bench = load_benchmark("jmed-sample")
            self._gold = {q.question.strip(): (f"{q.id}:{q.lang}", "".join(q.answer)) for q in bench.records}
        return self._gold

    def score_continuations(self, context: str, continuations: Sequence[str]) -> list[ContinuationScore]:
        if self.delay:
            time.sleep(self.delay)
        key, gold = next(
            ((k, g) for text, (k, g) in self._gold_answers().items() if text in context), ("?", "")
        )
        knows = zlib.crc32(f"{self.model_name}:{key}".encode()) % 1000 < self.skill * 1000
        scores = []
        for i, _ in enumerate(continuations):
            letter = "abcdefghij"[i]
            right = letter in gold
            scores.append(ContinuationScore(-1.0 if right == knows else -5.0 - i, 1))
        return scores

    def close(self) -> None:
        self.closed = True


class ScriptedBackend(Backend):
    """The real backend with scripted models. ``broken``: artifact names whose loading fails;
    ``on_score(n, cancel)`` runs after each scored question of a bench job."""

    def __init__(self, *, delay: float = 0.0, broken: Sequence[str] = (),
                 on_score: Callable[[int, threading.Event], None] | None = None) -> None:  # fmt: skip
        self.delay = delay
        self.broken = set(broken)
        self.opened: list[ScriptedRuntime] = []
        self.calls: list[tuple[str, Any]] = []
        self.on_score = on_score

    def open_runtime(self, artifact: Path) -> ScriptedRuntime:
        info = describe(Path(artifact))
        if info.name in self.broken:
            raise ModelError(f"llama.cpp cannot load {info.model_file}: failed to load model")
        runtime = ScriptedRuntime(info.path, info.name, delay=self.delay)
        self.opened.append(runtime)
        return runtime

    def run_benchmark(self, artifact, spec, out_dir, *, limit, progress, cancel: threading.Event):  # type: ignore[override]
        from jmed_edge.bench import BenchSettings, run_benchmark

        runtime = self.open_runtime(artifact)
        scored = 0

        def scorer_progress(report: Any) -> None:
            nonlocal scored
            scored += 1
            if self.on_score is not None:
                self.on_score(scored, cancel)
            progress(report)

        settings = BenchSettings(limit=limit, batch_size=1)
        return run_benchmark(artifact, spec, out_dir, settings, scorer_progress, cancel, runtime=runtime)

    def verify(self, artifact: Path) -> Any:
        self.calls.append(("verify", Path(artifact)))
        return super().verify(artifact)

    def convert_to_gguf(self, source, out_dir, quants, progress=None):  # type: ignore[override]
        self.calls.append(("convert", (Path(source), Path(out_dir), list(quants))))
        if progress is not None:
            progress.task("F16: converting medllm-merged with llama.cpp")
            progress.finish("F16: 270.0 KB, 16.0 bits/weight")
        return {}


def bench_runs(
    root: Path, names: Sequence[str] = ("medllm-F16", "medllm-Q8_0", "medllm-Q4_K_M"), limit: int = 16
) -> Path:
    """Bench results of the scripted GGUFs on jmed-sample (``limit`` questions per language),
    written by ``run_benchmark`` itself."""
    backend = ScriptedBackend()
    out = root / "bench"
    for name, quant, _ in GGUFS:
        if name in names:
            backend.run_benchmark(root / "gguf" / quant, "jmed-sample", out, limit=limit, progress=lambda _: None,
                                  cancel=threading.Event())  # fmt: skip
    return out


# --- driving the app under Pilot ----------------------------------------------------------


def key(app: Any, name: str) -> str:
    """The row key / option value of the artifact called ``name`` (its path)."""
    return next(str(a.info.path) for a in app.artifacts if a.name == name)


async def settle(pilot: Any) -> None:
    """Wait for the workers, then for the UI updates they posted (queued before a marker), drawn."""
    app = pilot.app
    await app.workers.wait_for_complete()
    handled = asyncio.Event()
    app.from_worker(handled.set)
    await asyncio.wait_for(handled.wait(), 10)
    await pilot.pause()
