"""ONNX (onnxruntime-genai) versus GGUF (llama.cpp) for one model, in one run, on this machine.

    python benchmarks/perf/onnx_vs_gguf.py [--src default] [--out runs/perf/onnx-vs-gguf]
                                           [--threads 1] [--repeats 3] [--tokens 64] [--json FILE]

For each artifact: size on disk, load time, prompt and decode tokens/s (greedy, ``--threads``
threads, best of ``--repeats``; decode also per CPU-second, which survives a shared CPU), and
what quantization cost against the Hugging Face source: KL divergence (mean, p99) and top-1
agreement on held-out Japanese and English medical text, measured by the same function
(``jmed_edge.convert.kl.kl_against``) for both routes. Rows: ONNX int8 and int4 (the builder's
CPU default accuracy_level=4), int4 with accuracy_level=1 (fp32 activations), int4 with an fp32
lm_head, and GGUF Q8_0 and Q4_K_M. Artifacts already built under ``--out`` are reused.

On the embedded 135M default model these numbers show the routes' relative behaviour, not what
a 7B will do: its hidden size 576 is not a multiple of 256 (llama.cpp K-quants fall back on
most tensors) and it was distributed as Q4_1, so 4-bit re-quantization is unusually lossy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

QUESTION = "Explain hypertension in detail: its causes, symptoms, complications and treatments."
ONNX_VARIANTS = {  # row label -> (folder under --out, precision, options)
    "ONNX int8": ("onnx", "int8", {}),
    "ONNX int4": ("onnx", "int4", {}),
    "ONNX int4 acc=1": ("onnx-acc1", "int4", {"accuracy_level": 1}),
    "ONNX int4 lm_head fp32": ("onnx-lmhead-fp32", "int4", {"lm_head": "fp32"}),
}
GGUF_QUANTS = ("Q8_0", "Q4_K_M")


@dataclass
class Row:
    label: str
    path: str
    size_bytes: int
    load_seconds: float = 0.0
    prompt_tps: float = 0.0
    decode_tps: float = 0.0
    decode_tokens_per_cpu_second: float = 0.0
    completion_tokens: int = 0
    kl: dict[str, dict[str, float]] = field(default_factory=dict)


def build_artifacts(src: str, out: Path, force: bool) -> dict[str, Path]:
    from jmed_edge.convert.gguf import convert_to_gguf
    from jmed_edge.convert.onnx import convert_to_onnx

    found: dict[str, Path] = {}
    groups: dict[tuple[str, str], list[str]] = {}
    for folder, precision, options in ONNX_VARIANTS.values():
        groups.setdefault((folder, json.dumps(options)), []).append(precision)
    for (folder, options), precisions in groups.items():
        written = convert_to_onnx(src, out / folder, precisions, options=json.loads(options), force=force)
        for label, (f, p, _) in ONNX_VARIANTS.items():
            if f == folder and p in written:
                found[label] = written[p]
    gguf_dirs = {q: out / "gguf" / q for q in GGUF_QUANTS}
    if force or not all((d / "jmed_manifest.json").exists() for d in gguf_dirs.values()):
        gguf_dirs = convert_to_gguf(src, out / "gguf", quants=list(GGUF_QUANTS), force=True, verify=False)
    found.update({f"GGUF {q}": gguf_dirs[q] for q in GGUF_QUANTS})
    return found


def long_prompt(tokens: int) -> str:
    from jmed_edge.convert.probes import held_out_texts

    texts = held_out_texts()
    return (texts["ja"] + "\n" + texts["en"])[: tokens * 2]


def measure(label: str, path: Path, args: argparse.Namespace, src: Path) -> Row:
    from jmed_edge.artifacts import describe
    from jmed_edge.convert.kl import kl_against
    from jmed_edge.runtimes import GenerationStats, SamplingParams, open_runtime

    info = describe(path)
    row = Row(label, str(path), info.size_bytes)
    started = time.perf_counter()
    runtime = open_runtime(info, n_threads=args.threads, n_ctx=2048)
    row.load_seconds = time.perf_counter() - started
    try:
        chat = runtime.render_chat([{"role": "user", "content": QUESTION}])
        prompt = long_prompt(256)
        for _ in range(args.repeats):
            stats = GenerationStats()
            for _piece in runtime.generate(prompt, SamplingParams(max_tokens=1), stats):
                pass
            row.prompt_tps = max(row.prompt_tps, stats.prompt_tokens_per_second)
            stats, cpu = GenerationStats(), []
            for _piece in runtime.generate(chat, SamplingParams(max_tokens=args.tokens), stats):
                cpu.append(time.process_time())
            if stats.decode_tokens_per_second > row.decode_tps:
                row.decode_tps, row.completion_tokens = (
                    stats.decode_tokens_per_second,
                    stats.completion_tokens,
                )
            if len(cpu) > 1 and cpu[-1] > cpu[0]:
                row.decode_tokens_per_cpu_second = max(
                    row.decode_tokens_per_cpu_second, (len(cpu) - 1) / (cpu[-1] - cpu[0])
                )
    finally:
        runtime.close()
    result = kl_against(src, path, positions=args.positions)
    row.kl = {lang: result[lang] for lang in ("ja", "en")}
    return row


def show(rows: list[Row], args: argparse.Namespace, model: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from jmed_edge.fsutil import human_bytes

    table = Table(
        title=f"ONNX vs GGUF, {model}, {args.threads} thread(s), best of {args.repeats}",
        caption="KL(source || artifact) on held-out medical text; tok/CPU-s is robust to a shared CPU",
    )
    for column in ("artifact", "size", "load s", "prompt tok/s", "decode tok/s", "tok/CPU-s",
                   "KL ja mean/p99", "KL en mean/p99", "top-1 ja/en"):  # fmt: skip
        table.add_column(column, justify="left" if column == "artifact" else "right")
    for r in rows:
        ja, en = r.kl["ja"], r.kl["en"]
        table.add_row(
            r.label, human_bytes(r.size_bytes), f"{r.load_seconds:.2f}", f"{r.prompt_tps:.0f}",
            f"{r.decode_tps:.1f}", f"{r.decode_tokens_per_cpu_second:.1f}",
            f"{ja['kl_mean']:.3f}/{ja['kl_p99']:.2f}", f"{en['kl_mean']:.3f}/{en['kl_p99']:.2f}",
            f"{ja['top1']:.0%}/{en['top1']:.0%}",
        )  # fmt: skip
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default="default", help="Hugging Face folder (default: the embedded model)")
    parser.add_argument("--out", type=Path, default=Path("runs/perf/onnx-vs-gguf"), help="artifact folder")
    parser.add_argument("--threads", type=int, default=1, help="threads for both runtimes (1)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best counts (3)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (64)")
    parser.add_argument("--positions", type=int, default=256, help="KL positions per language (256)")
    parser.add_argument("--force", action="store_true", help="rebuild the artifacts")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from jmed_edge.convert.onnx.source import resolve_source

    src = resolve_source(args.src)
    artifacts = build_artifacts(str(src), args.out, args.force)
    rows = [measure(label, path, args, src) for label, path in artifacts.items()]
    show(rows, args, src.name)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
