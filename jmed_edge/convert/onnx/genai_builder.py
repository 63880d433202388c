"""The onnxruntime-genai model builder as an exporter, run in a subprocess with progress shown.

The builder writes a fused decoder (GroupQueryAttention with a KV cache, MatMulNBits weights for
int8/int4), ``genai_config.json`` and the tokenizer files. It is driven through its Python
functions (``parse_extra_options`` + ``create_model``, the same calls its command line makes) in
``_builder_worker``, so that one process builds every precision of a request.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import signal
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

from jmed_edge.convert.onnx.exporters import BuildJob, BuildOutcome
from jmed_edge.convert.onnx.options import QUANTIZED, OnnxOptions
from jmed_edge.convert.onnx.source import SourceModel
from jmed_edge.errors import DependencyError

log = logging.getLogger(__name__)

# Causal-LM architectures whose text decoder onnxruntime-genai 0.18's builder exports
# (the dispatch in create_model, builder.py). Vision, audio and speech models are left out:
# jmed-edge verifies and runs a plain text decoder.
SUPPORTED_ARCHITECTURES = (
    "ChatGLMModel", "Ernie4_5ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
    "GptOssForCausalLM", "GraniteForCausalLM", "GraniteMoeHybridForCausalLM", "HunYuanDenseV1ForCausalLM",
    "InternLM2ForCausalLM", "Lfm2ForCausalLM", "Lfm2MoeForCausalLM", "LlamaForCausalLM", "MistralForCausalLM",
    "NemotronForCausalLM", "OlmoForCausalLM", "PhiForCausalLM", "Phi3ForCausalLM", "Phi3SmallForCausalLM",
    "PhiMoEForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "SmolLM3ForCausalLM",
)  # fmt: skip
# safetensors dtypes of the checkpoints exported here: the builder reads them through transformers
# and casts each weight to the export's precision (quantized and fp8 checkpoints take other paths).
FLOAT_DTYPES = ("BF16", "F16", "F32")
_MARKER = re.compile(r"^@@jmed (start|done|fail) (\S+) ?(.*)$")
_LAYER = re.compile(r"^Reading layer (\d+)")
# onnx_ir's save callback through the builder's tqdm: "Saving NAME (f32, [..]): 12%|..| 40/318 [...".
# int8/int4 weights are quantized during this write, so it is most of a large export's time.
_WRITING = re.compile(r"^Saving (?!ONNX).*\|\s*(\d+)/(\d+) \[")


def builder_extra_options(options: OnnxOptions, precision: str) -> list[str]:
    """The builder's KEY=VALUE ``--extra_options`` for ``options`` at ``precision``."""
    pairs = {"hf_token": "false"}  # never reach for a hub token: sources are local folders
    if precision in QUANTIZED:
        pairs["block_size"] = str(options.block_size)
        pairs["is_symmetric"] = str(options.symmetric).lower()
        if options.accuracy_level is not None:
            pairs["accuracy_level"] = str(options.accuracy_level)
        if options.algorithm != "default":
            pairs["algo_config"] = options.algorithm
        if options.lm_head == "fp32":
            pairs["nodes_to_exclude"] = "/lm_head/MatMul"
        elif options.lm_head in QUANTIZED and options.lm_head != precision:
            pairs["matmul_mixed_precision"] = f"last_matmul:{options.lm_head}"
    if options.shared_embeddings is not None:
        pairs["shared_embeddings"] = str(options.shared_embeddings).lower()
    pairs.update({k: str(v) for k, v in options.builder_options.items()})
    return [f"{k}={v}" for k, v in pairs.items()]


class GenAIBuilderExporter:
    name = "genai-builder"
    worker = "jmed_edge.convert.onnx._builder_worker"  # module run with -m in the subprocess

    def version(self) -> str:
        try:
            return importlib.metadata.version("onnxruntime-genai")
        except importlib.metadata.PackageNotFoundError:
            raise DependencyError(
                "the genai-builder exporter needs onnxruntime-genai; pip install onnxruntime-genai==0.18.0"
            ) from None

    def source_problems(self, source: SourceModel) -> list[str]:
        problems = []
        if source.architecture not in SUPPORTED_ARCHITECTURES:
            problems.append(
                f"architecture {source.architecture or '(none in config.json)'} is not supported by the "
                f"onnxruntime-genai builder; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        other = [d for d in source.dtypes if d not in FLOAT_DTYPES]
        if other or source.config.get("quantization_config"):
            problems.append(
                f"its weights are stored as {', '.join(other) or 'a quantized checkpoint (quantization_config)'}; "
                f"the onnxruntime-genai builder exports {', '.join(FLOAT_DTYPES)} checkpoints: export from the "
                "unquantized model (e.g. the merged bf16 folder)"
            )
        return problems

    def build(
        self,
        source: SourceModel,
        jobs: list[BuildJob],
        target: str,
        *,
        workdir: Path,
        log_path: Path,
        progress: bool = True,
    ) -> list[BuildOutcome]:
        self.version()
        job_file = workdir / "job.json"
        job_file.write_text(json.dumps({
            "source": str(source.path), "target": target, "cache_dir": str(workdir / "cache"),
            "jobs": [{"precision": j.precision, "out": str(j.out),
                      "extra_options": builder_extra_options(j.options, j.precision)} for j in jobs],
        }), encoding="utf-8")  # fmt: skip
        outcomes = {j.precision: BuildOutcome(j.precision, ok=False) for j in jobs}
        for job in jobs:
            outcomes[job.precision].details["builder_options"] = builder_extra_options(
                job.options, job.precision
            )
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        # glibc raises its mmap threshold after the first large free, so the quantizer's
        # per-slice buffers then come from the heap, whose freed holes are never returned:
        # the resident set grew by ~50 MB per layer. A fixed 1 MiB threshold gives every
        # large buffer back when freed: int4 at the 0.5B shape peaked at 1.77 GB without
        # it and 1.01 GB with it. Other C libraries ignore the variable.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1024**2))
        steps = source.num_layers + 4  # embeddings, layers, final norm, lm head, save
        command = [sys.executable, "-m", self.worker, str(job_file)]
        log.info("running the onnxruntime-genai builder: %s", " ".join(command))
        with open(log_path, "w", encoding="utf-8") as log_file, _progress(progress) as bar:
            tasks = (
                {j.precision: bar.add_task(f"onnx-{j.precision}", total=steps, start=False) for j in jobs}
                if bar
                else {}
            )
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                errors="replace", bufsize=1,
            )  # fmt: skip
            try:
                current = self._follow(proc, log_file, bar, tasks, steps, outcomes, log_path)
                code = proc.wait()
            except BaseException:  # Ctrl-C or an error here: never leave the builder running
                proc.kill()
                proc.wait()
                raise
        if code < 0 or current is not None:
            self._on_crash(code, current, outcomes, log_path)
        return list(outcomes.values())

    def _follow(self, proc, log_file, bar, tasks, steps: int, outcomes, log_path: Path) -> str | None:
        """Log the builder's output, move the bars, record outcomes; the precision unfinished at EOF."""
        current = None
        assert proc.stdout is not None
        for line in proc.stdout:  # text mode splits tqdm's carriage returns into lines too
            log_file.write(line)
            line = line.strip()
            marker = _MARKER.match(line)
            if marker:
                event, precision, rest = marker.groups()
                current = precision if event == "start" else None
                self._on_marker(event, precision, rest, outcomes, log_path)
                if bar and precision in tasks:
                    if event == "start":
                        bar.start_task(tasks[precision])
                    else:
                        mark = "✓" if event == "done" else "✗"
                        bar.update(tasks[precision], completed=steps, description=f"onnx-{precision} {mark}")
            elif bar and current in tasks:
                layer = _LAYER.match(line)
                if layer:
                    bar.update(tasks[current], completed=1 + int(layer.group(1)))
                elif line.startswith(("Reading final norm", "Reading LM head")):
                    bar.advance(tasks[current])
                elif line.startswith("Saving ONNX model"):
                    bar.update(tasks[current], completed=steps - 1, description=f"onnx-{current} saving")
                elif writing := _WRITING.match(line):
                    done, total = writing.groups()
                    bar.update(tasks[current], description=f"onnx-{current} writing {done}/{total} tensors")
        return current

    @staticmethod
    def _on_marker(
        event: str, precision: str, rest: str, outcomes: dict[str, BuildOutcome], log_path: Path
    ) -> None:
        outcome = outcomes[precision]
        if event == "done":
            seconds, _, peak_kb = rest.partition(" ")
            outcome.ok = True
            outcome.seconds = float(seconds or 0)
            if peak_kb.strip().isdigit():
                outcome.details["builder_peak_rss_bytes"] = int(peak_kb) * 1024
        elif event == "fail":
            outcome.error = (
                f"the onnxruntime-genai builder failed for {precision}: {rest} (full log: {log_path})"
            )

    @staticmethod
    def _on_crash(code: int, current: str | None, outcomes: dict[str, BuildOutcome], log_path: Path) -> None:
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"stopped with exit code {code}"
        hint = (
            " (out of memory? close other programs or build fewer precisions at once)" if code == -9 else ""
        )
        for outcome in outcomes.values():
            if not outcome.ok and not outcome.error:
                outcome.error = (
                    f"the onnxruntime-genai builder process {how}{hint} while building "
                    f"{current or 'the model'}; full log: {log_path}"
                )


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=False,
    )  # fmt: skip
