"""What each pipeline stage costs, in time and peak RAM, from 135M up to a 7B's shape.

    python benchmarks/perf/scale.py --sizes 135m,0.5b --out runs/scale
    python benchmarks/perf/scale.py --sizes 7b --out runs/scale --stages merge,convert_f16

For each size a random bf16 model of a real shape is built once and cached under OUT/models/
(``jmed_edge.testing.random_models``: SmolLM2-135M, Qwen2-0.5B, Qwen2-1.5B, Qwen2.5-3B, Qwen2-7B
shapes), then every stage runs in a fresh process, measured from outside:

  train        2 LoRA steps (r 8, attention + MLP, bf16, 128-token sequences, batch 1)
  merge        ``jmed-edge merge`` (base dtype, streamed) incl. its logit check
  convert_f16  ``jmed-edge convert --quant f16 --no-verify`` (llama.cpp's converter)
  imatrix      llama-imatrix over the bundled ja/en calibration text (43 chunks of 512 tokens with
               the default tokenizer; --imatrix-chunks N takes the first N), on the F16 GGUF
  quantize_q8_0, quantize_q4_k_m   the bindings' quantizer, from the F16 GGUF (+ imatrix)
  verify       ``jmed-edge verify F16`` (tokenizer, chat template, logits against the HF model)
  kl           ``jmed-edge verify Q4_K_M`` (KL, top-1, perplexity against the F16 GGUF)
  bench_gguf   ``jmed-edge bench Q4_K_M -b jmed-sample --limit 20`` (llama.cpp)
  bench_hf     the same 20 questions on the merged HF model (torch)
  onnx_int4, onnx_int8   ``jmed-edge convert MODEL --to onnx --quant int4|int8 --no-verify`` from the
               bf16 model (onnxruntime-genai's builder, weights quantized one at a time while written)
  bench_onnx   the same 20 questions on the onnx-int4 folder (onnxruntime-genai)

Peak RSS: the process tree's summed RSS sampled every 50 ms, or the largest single process's
VmHWM (the kernel's exact peak) when that is higher. Writes OUT/scale.json (``stages[]`` with
size, stage, seconds, peak_rss_bytes, model_bytes = the bf16 safetensors size, and the ratio each
goal is stated in), prints a table and draws OUT/scale.png (log-log, per stage).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

STAGES = ("train", "merge", "convert_f16", "imatrix", "quantize_q8_0", "quantize_q4_k_m", "verify", "kl",
          "bench_gguf", "bench_hf", "onnx_int4", "onnx_int8", "bench_onnx")  # fmt: skip
# Goals from issue #15: peak RSS as a multiple of what (model_bytes, the F16 file, the GGUF benched).
GOALS = {"merge": (1.3, "model"), "convert_f16": (1.2, "model"), "quantize_q8_0": (1.1, "f16"),
         "quantize_q4_k_m": (1.1, "f16"), "verify": (1.3, "model"), "bench_gguf": (1.2, "gguf"),
         # issue #21: ONNX export from the bf16 model, and bench on the int4 folder it wrote
         "onnx_int4": (1.5, "model"), "onnx_int8": (1.5, "model"), "bench_onnx": (1.2, "onnx")}  # fmt: skip
PY = sys.executable


def measure(cmd: list[str], log: Path, lock: Path | None = None) -> tuple[float, int, int]:
    """(seconds, peak summed RSS of the tree, peak VmHWM of its largest process) of ``cmd``.

    ``lock``: a file locked (flock) while the stage runs, so that memory-heavy jobs sharing the
    machine take turns instead of pushing each other out of RAM; the wait is not timed."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    peak_sum = peak_hwm = 0
    with open(log, "w") as out, _locked(lock):
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_sum, peak_hwm
            while not stop.is_set():
                try:
                    root = psutil.Process(proc.pid)
                    tree = [root, *root.children(recursive=True)]
                    total = 0
                    for p in tree:
                        try:
                            total += p.memory_info().rss
                            peak_hwm = max(peak_hwm, _hwm(p.pid))
                        except psutil.Error:
                            pass
                    peak_sum = max(peak_sum, total)
                except psutil.Error:
                    pass
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... failed ({proc.returncode}):\n{tail}")
    return seconds, peak_sum, peak_hwm


@contextmanager
def _locked(lock: Path | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    import fcntl

    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _recipe(model: Path, work: Path) -> Path:
    import yaml

    recipe = {
        "model": {"path": str(model)},
        "data": {"files": [{"path": str(_repo() / "recipes/data/medical_instruct_sample.jsonl"), "format": "alpaca"}],
                 "template": "chat"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                         "gate_proj", "up_proj", "down_proj"]},
        "train": {"max_steps": 2, "batch_size": 1, "max_length": 128, "precision": "bf16", "lr": 1e-4,
                  "gradient_checkpointing": True, "log_every": 1},
        "output": {"dir": str(work / "adapter"), "checkpoint_every": 1000},
    }  # fmt: skip
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def _repo() -> Path:
    return Path(__file__).resolve().parents[2]


def _worker(stage: str, merged: str, gguf_dir: str) -> int:
    """imatrix and quantize stages on their own (``convert`` always re-converts the F16 first)."""
    from jmed_edge.convert import gguf
    from jmed_edge.convert.progress import LogProgress
    from jmed_edge.convert.quant_types import quant_type
    from jmed_edge.convert.sources import check_hf_source

    source = check_hf_source(Path(merged))
    base_dir = Path(gguf_dir) / "F16"
    matrix = Path(gguf_dir) / gguf.IMATRIX_FILE
    if stage == "imatrix":
        chunks = int(os.environ.get("SCALE_IMATRIX_CHUNKS", "0"))
        if chunks:  # the first CHUNKS x 512 tokens of the calibration text: time is linear in chunks
            from transformers import AutoTokenizer

            corpus, calibration = gguf.probes.calibration_corpus()
            tokenizer = AutoTokenizer.from_pretrained(merged)
            short = tokenizer.decode(tokenizer(corpus)["input_ids"][: chunks * 512 + 8])
            gguf.probes.calibration_corpus = lambda: (short, dict(calibration))
        gguf._imatrix("auto", base_dir, source, LogProgress())
        return 0
    q = quant_type(stage.removeprefix("quantize_"))
    im = gguf._imatrix(matrix, base_dir, source, LogProgress()) if q.uses_imatrix else None
    model = gguf.resolve_name(source, None, LogProgress())
    gguf._quantize_one(q, base_dir, Path(gguf_dir) / q.name, source, im, model, force=True, verify=False,
                       progress=LogProgress(), texts_by_lang=None)  # fmt: skip
    return 0


def commands(stage: str, model: Path, work: Path) -> list[str]:
    jm = [PY, "-m", "jmed_edge"]
    merged, g, bench = work / "merged", work / "gguf", work / "bench"
    table = {
        "train": [*jm, "train", str(_recipe(model, work)), "--out", str(work / "adapter"), "--force", "--quiet"],
        "merge": [*jm, "merge", str(work / "adapter"), "--base", str(model), "--out", str(merged), "--force"],
        "convert_f16": [*jm, "convert", str(merged), "--quant", "f16", "--out", str(g), "--force", "--no-verify"],
        "verify": [*jm, "verify", str(g / "F16"), "--no-record"],
        "kl": [*jm, "verify", str(g / "Q4_K_M"), "--no-record"],
        "bench_gguf": [*jm, "bench", str(g / "Q4_K_M"), "-b", "jmed-sample", "--limit", "20", "--out",
                       str(bench / "gguf"), "--force", "--no-probe"],
        "bench_hf": [*jm, "bench", str(merged), "-b", "jmed-sample", "--limit", "20", "--out", str(bench / "hf"),
                     "--force", "--no-probe", "--batch-size", "1"],
        "onnx_int4": [*jm, "convert", str(model), "--to", "onnx", "--quant", "int4", "--out", str(work / "onnx"),
                      "--force", "--no-verify"],
        "onnx_int8": [*jm, "convert", str(model), "--to", "onnx", "--quant", "int8", "--out", str(work / "onnx"),
                      "--force", "--no-verify"],
        "bench_onnx": [*jm, "bench", str(work / "onnx" / "onnx-int4"), "-b", "jmed-sample", "--limit", "20",
                       "--out", str(bench / "onnx"), "--force", "--no-probe"],
    }  # fmt: skip
    if stage in table:
        return table[stage]
    return [PY, str(Path(__file__).resolve()), "--worker", stage, str(merged), str(g)]


def _gguf_bytes(work: Path, quant: str) -> int:
    return sum(p.stat().st_size for p in (work / "gguf" / quant).glob("*.gguf"))


def _ratio(
    stage: str, peak: int, model_bytes: int, work: Path
) -> tuple[float | None, str | None, float | None]:
    if stage not in GOALS:
        return None, None, None
    goal, of = GOALS[stage]
    denominator = {
        "model": model_bytes,
        "f16": _gguf_bytes(work, "F16"),
        "gguf": _gguf_bytes(work, "Q4_K_M"),
        "onnx": sum(p.stat().st_size for p in (work / "onnx" / "onnx-int4").glob("model.onnx*")),
    }[of]
    return (peak / denominator if denominator else None), of, goal


def _save_disk(stage: str, model: Path, work: Path) -> dict:
    """After ``stage`` is measured, drop what later stages do not need (``--save-disk``): at the
    7B shape the base, merged, F16 and Q8_0 copies together are 53 GB. The merged folder becomes
    a link to the base (same shape and bytes: the weights are random either way), and Q8_0,
    which no later stage reads, is deleted once its size is recorded."""
    import shutil

    if stage == "merge" and (work / "merged").is_dir() and not (work / "merged").is_symlink():
        shutil.rmtree(work / "merged")
        (work / "merged").symlink_to(model.resolve(), target_is_directory=True)
        return {"later_stages_read": "the base model (merged copy deleted to save disk)"}
    if stage == "quantize_q8_0" and (work / "gguf" / "Q8_0").is_dir():
        size = _gguf_bytes(work, "Q8_0")
        shutil.rmtree(work / "gguf" / "Q8_0")
        return {"artifact_bytes": size, "artifact_deleted": True}
    return {}


def run(
    sizes: list[str],
    stages: list[str],
    out: Path,
    imatrix_chunks: int = 0,
    *,
    lock: Path | None = None,
    save_disk: bool = False,
) -> list[dict]:
    from jmed_edge.manifest import read_manifest
    from jmed_edge.testing.random_models import SOURCES, build_random_model

    results_file = out / "scale.json"
    old = json.loads(results_file.read_text())["stages"] if results_file.exists() else []
    rows = [r for r in old if (r["size"], r["stage"]) not in {(s, t) for s in sizes for t in stages}]
    measured: list[dict] = []  # this run's rows: only these are written over the file's
    for size in sizes:
        model = out / "models" / size
        if not (model / "config.json").is_file():
            print(f"[{size}] building a random {SOURCES[size]}-shape model ...", flush=True)
            build_random_model(model, size)
        model_bytes = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        params = read_manifest(model).details["parameters"]
        work = out / "runs" / size
        work.mkdir(parents=True, exist_ok=True)
        for stage in stages:
            if stage != "train" and not (work / "adapter" / "adapter_config.json").is_file():
                from jmed_edge.testing.random_models import random_adapter

                print(f"[{size}] no trained adapter: a random rank-8 one stands in", flush=True)
                random_adapter(model, work / "adapter", r=8)
            print(f"[{size}] {stage} ...", flush=True)
            if stage == "imatrix":
                os.environ["SCALE_IMATRIX_CHUNKS"] = str(imatrix_chunks)
            seconds, peak_sum, peak_hwm = measure(commands(stage, model, work), work / f"{stage}.log", lock)
            peak = max(peak_sum, peak_hwm)
            ratio, of, goal = _ratio(stage, peak, model_bytes, work)
            row = {"size": size, "shape_of": SOURCES[size], "parameters": params, "stage": stage,
                   "seconds": round(seconds, 1), "peak_rss_bytes": peak, "peak_tree_rss_bytes": peak_sum,
                   "peak_process_hwm_bytes": peak_hwm, "model_bytes": model_bytes,
                   "ratio": None if ratio is None else round(ratio, 3), "ratio_of": of, "goal": goal,
                   "met": None if ratio is None else ratio <= goal}  # fmt: skip
            if stage == "imatrix":
                row["imatrix_chunks"] = imatrix_chunks or "all"
            if save_disk:
                row |= _save_disk(stage, model, work)
            rows.append(row)
            measured.append(row)
            print(f"[{size}] {stage}: {seconds:.1f} s, peak {peak / 1e9:.2f} GB"
                  + ("" if ratio is None else f" = {ratio:.2f}x {of} (goal {goal}x)"), flush=True)  # fmt: skip
            _write(results_file, measured)
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` over the file's rows of the same size and stage, keeping the others: two runs
    (say 7b, and 0.5b beside it) may share one OUT."""
    import platform

    mine = {(r["size"], r["stage"]) for r in rows}
    try:
        kept = [r for r in json.loads(path.read_text())["stages"] if (r["size"], r["stage"]) not in mine]
    except (OSError, ValueError, KeyError):
        kept = []
    rows = kept + rows
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "ram_bytes": psutil.virtual_memory().total}  # fmt: skip
    tmp = path.with_name(f".{path.name}.{os.getpid()}")  # renamed over: a reader never sees half a file
    tmp.write_text(json.dumps({"machine": meta, "stages": rows}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="time and peak RSS per stage (random weights of real shapes)")
    for col in ("size", "stage", "seconds", "peak RSS", "model bf16", "ratio", "goal", ""):
        t.add_column(col, justify="right" if col not in ("size", "stage") else "left")
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x {r['ratio_of']}"
        mark = "" if r["met"] is None else ("[green]✓[/]" if r["met"] else "[red]✗[/]")
        t.add_row(r["size"], r["stage"], f"{r['seconds']:.1f}", f"{r['peak_rss_bytes'] / 1e9:.2f} GB",
                  f"{r['model_bytes'] / 1e9:.2f} GB", ratio, "" if r["goal"] is None else f"<= {r['goal']}x", mark)  # fmt: skip
    Console().print(t)


def markdown(rows: list[dict]) -> str:
    """One row per stage, one column per size: seconds and peak RSS (ratio to its goal's base)."""
    sizes = sorted(
        {r["size"] for r in rows}, key=lambda s: next(r["parameters"] for r in rows if r["size"] == s)
    )
    cell = {(r["size"], r["stage"]): r for r in rows}
    head = "| stage (goal) | " + " | ".join(
        f"{s} ({next(r['model_bytes'] for r in rows if r['size'] == s) / 1e9:.2f} GB)" for s in sizes
    )
    lines = [head + " |", "|---" * (len(sizes) + 1) + "|"]
    for stage in STAGES:
        if not any((s, stage) in cell for s in sizes):
            continue
        goal = GOALS.get(stage)
        name = f"{stage} (<= {goal[0]}x {goal[1]})" if goal else stage
        cells = []
        for s in sizes:
            r = cell.get((s, stage))
            if r is None:
                cells.append("not run")
                continue
            ratio = "" if r["ratio"] is None else f", {r['ratio']:.2f}x" + ("" if r["met"] else " ✗")
            cells.append(f"{r['seconds']:.0f} s, {r['peak_rss_bytes'] / 1e9:.2f} GB{ratio}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
    for stage in STAGES:
        points = sorted(
            (r["parameters"], r["seconds"], r["peak_rss_bytes"]) for r in rows if r["stage"] == stage
        )
        if not points:
            continue
        x = [p[0] for p in points]
        # imatrix rows may cover fewer calibration chunks (--imatrix-chunks): see scale.json
        ax_t.plot(x, [p[1] for p in points], marker="o", label=stage)
        ax_m.plot(x, [p[2] / 1e9 for p in points], marker="o", label=stage)
    for ax, label in ((ax_t, "wall time (s)"), (ax_m, "peak RSS (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # the 2x10^8 ... labels overlap
        ax.set_xlabel("parameters")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=8)
    fig.suptitle("jmed-edge stages against model size (2-core CPU)")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        return _worker(*argv[1:4])
    if argv and argv[0] == "--report":  # table, plot and markdown again from OUT/scale.json
        out = Path(argv[1])
        rows = json.loads((out / "scale.json").read_text())["stages"]
        table(rows)
        plot(rows, out / "scale.png")
        (out / "scale.md").write_text(markdown(rows), encoding="utf-8")
        print(markdown(rows))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="135m,0.5b", help="comma-separated: 135m,0.5b,1.5b,3b,7b")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset, in pipeline order"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for models, runs, scale.json, scale.png"
    )
    parser.add_argument(
        "--imatrix-chunks", type=int, default=0,
        help="imatrix over the first N chunks of 512 tokens only (default: all 43; time is linear in N)",
    )  # fmt: skip
    parser.add_argument(
        "--lock", type=Path,
        help="a file to flock while each stage runs (memory-heavy jobs sharing the machine take turns)",
    )  # fmt: skip
    parser.add_argument(
        "--save-disk", action="store_true",
        help="link the merged folder to the base after merge and delete Q8_0 once measured (7B: 53 -> 30 GB)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage {unknown[0]}; known: {', '.join(STAGES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(
        [s for s in args.sizes.split(",") if s], stages, args.out, args.imatrix_chunks,
        lock=args.lock, save_disk=args.save_disk,
    )  # fmt: skip
    table(rows)
    plot(rows, args.out / "scale.png")
    (args.out / "scale.md").write_text(markdown(rows), encoding="utf-8")
    print(f"wrote {args.out / 'scale.json'}, scale.png and scale.md (the README's table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
