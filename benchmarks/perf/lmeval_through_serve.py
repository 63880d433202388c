"""lm-evaluation-harness scoring a GGUF through ``jmed-edge serve``: correct numbers, and how fast.

    python benchmarks/perf/lmeval_through_serve.py                  # embedded default model
    python benchmarks/perf/lmeval_through_serve.py --n 40 --threads 2 --out runs/perf/lmeval_serve

lm-eval scores a multiple-choice task through an OpenAI-compatible server by sending each
context + choice to ``/v1/completions`` with ``echo: true, logprobs: 1, max_tokens: 1`` and
summing ``token_logprobs[ctxlen:-1]``. This script runs lm-eval 0.4.13 itself, offline, on a
task written here from the bundled Japanese and English sample (the prompt text jmed-edge's
bench renders, read verbatim by the task), four ways:

1. ``hf`` backend on the fp32 Hugging Face source: the reference numbers;
2. ``local-completions`` with token-id prompts (``tokenized_requests=True``, lm-eval's default)
   against ``jmed-edge serve`` on the F16 GGUF;
3. ``local-completions`` with text prompts (``tokenized_requests=False``) against the same server;
4. the ``gguf`` backend (text prompts, ``text_offset``) against the same server;

then times ``local-completions`` through ``serve`` on a Q8_0 copy against the ``hf`` backend.
Per choice it compares each server run's log-likelihood with the ``hf`` backend's (median and
max difference, picks agreeing) and writes ``results.json`` plus a table. The default model
puts the highest score on "A" for nearly every question, so agreeing picks prove little: the
per-choice log-likelihoods are the check.

lm-eval is installed into its own ``.venv-lmeval`` (as ``bench_vs_lmeval.py`` does), seeing this
environment's torch and transformers through a ``.pth`` file. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import site
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_lmeval import LMEVAL_VENV, offline_env  # noqa: E402

LMEVAL_SPEC = "lm-eval[hf,api]==0.4.13"
TASK = "jmed_sample_mcq"
MODEL_NAME = "jmed"


def ensure_lmeval() -> list[str]:
    """The command that runs lm-eval from ``.venv-lmeval``, with the ``api`` extra (the HTTP
    backends) installed there on first use."""
    python = LMEVAL_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LMEVAL_VENV)], check=True)
        venv_site = next((LMEVAL_VENV / "lib").glob("python3*/site-packages"))
        # Share this environment's torch/transformers instead of installing them twice.
        (venv_site / "jmed_edge_main_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    probe = subprocess.run([str(python), "-c", "import lm_eval, aiohttp, tenacity"], capture_output=True)
    if probe.returncode != 0:
        print(f"installing {LMEVAL_SPEC} into {LMEVAL_VENV} (once)", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", LMEVAL_SPEC], check=True)
    return [str(python), "-m", "lm_eval"]


def write_task(work: Path, n_per_lang: int) -> tuple[Path, list[dict]]:
    """A lm-eval task over the bundled sample's single-answer questions, ja and en."""
    from jmed_edge.bench.prompting import build_prompt, letter_continuations
    from jmed_edge.bench.registry import load_benchmark

    records = load_benchmark("jmed-sample").records
    docs: list[dict] = []
    for lang in ("ja", "en"):
        picked = [q for q in records if q.lang == lang and len(q.answer) == 1 and q.choices][:n_per_lang]
        for q in picked:
            prompt = build_prompt(q, "medpalm", [])
            docs.append({"id": f"{lang}:{q.id}", "lang": lang, "query": prompt,
                         "choices": letter_continuations(prompt, q),
                         "gold": q.letters.index(q.answer[0])})  # fmt: skip
    task_dir = work / "lmeval-task"
    task_dir.mkdir(parents=True, exist_ok=True)
    path = task_dir / "docs.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    (task_dir / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: query\ndoc_to_choice: choices\n"
        'doc_to_target: gold\ntarget_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8",
    )
    return task_dir, docs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(artifact: Path, threads: int, n_ctx: int):
    """``jmed-edge serve ARTIFACT`` on a free loopback port, stopped on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "jmed_edge", "serve", str(artifact), "--port", str(port),
           "--model-name", MODEL_NAME, "--threads", str(threads), "--ctx", str(n_ctx)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=offline_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"jmed-edge serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("jmed-edge serve did not start within 180 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_lmeval(model: str, model_args: str, task_dir: Path, out: Path, threads: int) -> dict:
    """One lm-eval run; per-doc log-likelihoods of every choice and the wall time."""
    cmd = [*ensure_lmeval(), "--model", model, "--model_args", model_args, "--tasks", TASK,
           "--include_path", str(task_dir), "--batch_size", "1", "--output_path", str(out),
           "--log_samples"]  # fmt: skip
    if model == "hf":
        cmd += ["--device", "cpu"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=offline_env(threads))
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"lm_eval --model {model} failed:\n{done.stderr[-4000:]}")
    results = json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())
    scores: dict[str, list[float]] = {}
    for line in sorted(out.rglob(f"samples_{TASK}_*.jsonl"))[-1].read_text().splitlines():
        sample = json.loads(line)
        scores[sample["doc"]["id"]] = [
            float(r[0][0] if isinstance(r[0], list) else r[0]) for r in sample["resps"]
        ]
    return {
        "accuracy": results["results"][TASK]["acc,none"],
        "wall_seconds": round(wall, 1),
        "scores": scores,
    }


def compare(run: dict, reference: dict) -> dict:
    diffs = [
        abs(a - b)
        for k, ref in reference["scores"].items()
        for a, b in zip(run["scores"][k], ref, strict=True)
    ]
    picks = sum(1 for k, ref in reference["scores"].items()
                if max(range(len(ref)), key=ref.__getitem__) == max(range(len(ref)), key=run["scores"][k].__getitem__))  # fmt: skip
    zeros = sum(1 for v in run["scores"].values() for x in v if x == 0.0)
    return {"choices": len(diffs), "median_abs_diff": statistics.median(diffs), "max_abs_diff": max(diffs),
            "same_pick": picks / len(reference["scores"]), "zero_scores": zeros}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="HF model folder (default: the embedded default model)")
    parser.add_argument("--n", type=int, default=20, help="questions per language")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "perf" / "lmeval_through_serve")
    args = parser.parse_args()

    from jmed_edge.convert.gguf import convert_to_gguf
    from jmed_edge.models.default import materialise

    model = args.model or materialise()
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    task_dir, docs = write_task(work, args.n)
    gguf_dir = work / "gguf"
    if not (gguf_dir / "Q8_0").is_dir():
        convert_to_gguf(model, gguf_dir, quants=("q8_0",), verify=False, force=True)
    f16, q8 = gguf_dir / "F16", gguf_dir / "Q8_0"
    print(f"{len(docs)} questions ({args.n} per language); {args.threads} threads; model {model}", flush=True)

    results: dict = {"model": str(model), "questions": len(docs), "threads": args.threads, "runs": {}}
    runs = results["runs"]
    hf = run_lmeval("hf", f"pretrained={model},dtype=float32", task_dir, work / "out-hf", args.threads)
    runs["hf (fp32 source)"] = hf
    tok = f"tokenizer_backend=huggingface,tokenizer={model},max_retries=1,num_concurrent=1,max_length={args.ctx}"
    with serving(f16, args.threads, args.ctx) as base:
        url = f"model={MODEL_NAME},base_url={base}/v1/completions,{tok}"
        runs["serve F16: local-completions, token ids"] = run_lmeval(
            "local-completions",
            url + ",tokenized_requests=True",
            task_dir,
            work / "out-f16-ids",
            args.threads,
        )
        runs["serve F16: local-completions, text"] = run_lmeval(
            "local-completions",
            url + ",tokenized_requests=False",
            task_dir,
            work / "out-f16-text",
            args.threads,
        )
        runs["serve F16: gguf backend"] = run_lmeval(
            "gguf", f"base_url={base}", task_dir, work / "out-f16-gguf", args.threads
        )
    with serving(q8, args.threads, args.ctx) as base:
        url = f"model={MODEL_NAME},base_url={base}/v1/completions,{tok},tokenized_requests=True"
        runs["serve Q8_0: local-completions, token ids"] = run_lmeval(
            "local-completions", url, task_dir, work / "out-q8-ids", args.threads
        )
    for run in runs.values():
        if run is not hf:
            run["vs_hf"] = compare(run, hf)
    q8_wall = runs["serve Q8_0: local-completions, token ids"]["wall_seconds"]
    results["speedup_q8_serve_vs_hf"] = round(hf["wall_seconds"] / q8_wall, 2)
    (work / "results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"lm-eval 0.4.13 on {results['questions']} questions (ja + en), per-choice log-likelihood"
    )
    for col in ("run", "acc", "wall s", "median |Δ| vs hf", "max |Δ| vs hf", "same pick", "scores = 0"):
        table.add_column(col)
    for name, run in results["runs"].items():
        vs = run.get("vs_hf")
        table.add_row(name, f"{run['accuracy']:.3f}", f"{run['wall_seconds']:.1f}",
                      *((f"{vs['median_abs_diff']:.4f}", f"{vs['max_abs_diff']:.4f}", f"{vs['same_pick']:.0%}",
                         str(vs["zero_scores"])) if vs else ("ref", "ref", "ref", "")))  # fmt: skip
    Console().print(table)
    Console().print(
        f"Q8_0 through serve is {results['speedup_q8_serve_vs_hf']}x the hf backend on fp32 (wall time)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
