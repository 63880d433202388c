"""Speed and accuracy parity: ``jmed-edge bench`` against lm-evaluation-harness, side by side.

    python benchmarks/perf/bench_vs_lmeval.py                 # embedded default model, 200 questions
    python benchmarks/perf/bench_vs_lmeval.py --model PATH --threads 8 --out runs/perf/lmeval

Both tools score the same 200 MedQA-format questions with the same model, 0-shot, by the
log-likelihood of the answer letter after the same prompt text (jmed-edge renders it; the
lm-eval task reads the rendered text verbatim), so they must pick the same letter on (nearly)
every question. Reported: accuracy of each (goal: within 1 point), per-question agreement,
questions per second of each and their ratio (goal: jmed-edge >= 2x on the Hugging Face
runtime), and the GGUF runtime's questions per second on a Q8_0 copy.

The 200 questions are synthetic: the bundled sample's single-answer English questions, each
in several templated variants (4 of its 5 options, shuffled, a reworded stem). They measure
speed and agreement between two harnesses, not medical knowledge.

lm-eval 0.4.13 is installed into its own ``.venv-lmeval`` (created here on first use); that
venv sees the main environment's torch and transformers through a ``.pth`` file, so nothing
is downloaded twice and both harnesses run the very same libraries. Runs fully offline once
installed (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import site
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LMEVAL_VENV = ROOT / ".venv-lmeval"
LMEVAL_SPEC = "lm-eval[hf]==0.4.13"
TASK = "jmed_medqa_synth"
DEV_SIZE = 5  # extra variants written as the dev split (few-shot examples)
# Stem rewordings for the synthetic variants (the question text itself is unchanged).
STEMS = (
    "{q}",
    "A clinician asks: {q}",
    "{q} Select the single best answer.",
    "Medical licensing review. {q}",
    "Consider the following. {q}",
    "Best answer? {q}",
)


def make_questions(n: int, seed: int) -> list[dict]:
    """``n`` MedQA-format records from the bundled sample: 4 options each, answer position shuffled."""
    from jmed_edge.bench.registry import load_benchmark

    sample = [q for q in load_benchmark("jmed-sample").records if q.lang == "en" and len(q.answer) == 1]
    out: list[dict] = []
    for variant, stem in enumerate(STEMS):
        for index, q in enumerate(sample):
            rng = random.Random(seed * 100_003 + variant * 1009 + index)
            gold = q.choice_text(q.answer[0])
            distractors = [c for c in q.choices if c != gold]
            distractors.pop(variant % len(distractors))
            options = [gold, *distractors[:3]]
            rng.shuffle(options)
            letters = "ABCD"
            out.append({
                "question": stem.format(q=q.question),
                "options": dict(zip(letters, options, strict=True)),
                "answer_idx": letters[options.index(gold)],
                "answer": gold,
                "meta_info": f"synthetic variant {variant} of jmed-sample {q.id}",
            })  # fmt: skip
            if len(out) == n:
                return out
    raise SystemExit(f"the sample yields only {len(out)} variants; ask for --n {len(out)} or fewer")


def write_inputs(questions: list[dict], dev: list[dict], work: Path, shots: int) -> tuple[Path, Path]:
    """A MedQA folder (test + dev) for jmed-edge, and the same prompts, rendered, for lm-eval."""
    from jmed_edge.bench.prompting import build_prompt, letter_continuations, pick_shots
    from jmed_edge.bench.registry import load_benchmark

    medqa = work / "medqa-synth"
    medqa.mkdir(parents=True, exist_ok=True)
    (medqa / "test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    (medqa / "dev.jsonl").write_text("".join(json.dumps(q) + "\n" for q in dev), encoding="utf-8")
    bench = load_benchmark(f"medqa:{medqa}")
    records, examples = bench.records, pick_shots(bench.dev, "en", shots)
    task_dir = work / "lmeval-task"
    task_dir.mkdir(exist_ok=True)
    docs = task_dir / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as fh:
        for q in records:
            prompt = build_prompt(q, "medpalm", examples)
            doc = {"id": q.id, "query": prompt, "choices": letter_continuations(prompt, q),
                   "gold": "abcd".index(q.answer[0])}  # fmt: skip
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    (task_dir / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {docs}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: query\n"
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        'target_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8",
    )
    return medqa, task_dir


def ensure_lmeval() -> Path:
    """``.venv-lmeval/bin/lm_eval``, creating the venv and installing lm-eval on first use."""
    exe = LMEVAL_VENV / "bin" / "lm_eval"
    if exe.exists():
        return exe
    print(f"creating {LMEVAL_VENV} and installing {LMEVAL_SPEC} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LMEVAL_VENV)], check=True)
    venv_site = next((LMEVAL_VENV / "lib").glob("python3*/site-packages"))
    # Share this environment's torch/transformers instead of installing them twice.
    (venv_site / "jmed_edge_main_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(LMEVAL_VENV / "bin" / "pip"), "install", "--quiet", LMEVAL_SPEC], check=True)
    return exe


def offline_env(threads: int) -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")  # fmt: skip


def run_jmed(artifact: Path, medqa: Path, out: Path, batch: int, threads: int, shots: int) -> dict:
    cmd = [sys.executable, "-m", "jmed_edge", "bench", str(artifact), "--benchmark", f"medqa:{medqa}",
           "--out", str(out), "--force", "--batch-size", str(batch), "--n-threads", str(threads),
           "--shots", str(shots), "--json"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=offline_env(threads))
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"jmed-edge bench failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)[0]
    rows = [
        json.loads(line) for line in Path(summary["out_dir"], "predictions.jsonl").read_text().splitlines()
    ]
    return {"summary": summary, "wall_seconds": wall, "picks": {r["id"]: r["pred"][0] for r in rows}}


def run_lmeval(model: Path, task_dir: Path, out: Path, batch: int, threads: int) -> dict:
    exe = ensure_lmeval()
    cmd = [str(exe), "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
           "--tasks", TASK, "--include_path", str(task_dir), "--batch_size", str(batch), "--device", "cpu",
           "--output_path", str(out), "--log_samples"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=offline_env(threads))
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"lm_eval failed:\n{done.stderr[-3000:]}")
    results = json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())
    samples = sorted(out.rglob(f"samples_{TASK}_*.jsonl"))[-1]
    picks = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        scores = [resp[0][0] if isinstance(resp[0], list) else resp[0] for resp in sample["filtered_resps"]]
        picks[sample["doc"]["id"]] = "abcd"[max(range(len(scores)), key=lambda i: float(scores[i]))]
    return {
        "accuracy": results["results"][TASK]["acc,none"],
        "eval_seconds": float(results.get("total_evaluation_time_seconds", 0) or 0),
        "wall_seconds": wall,
        "picks": picks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="HF model folder (default: the embedded default model)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "perf" / "bench_vs_lmeval")
    parser.add_argument("--n", type=int, default=200, help="number of synthetic questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shots", type=int, default=0, help="few-shot examples (same rendered prompt in both)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-lmeval", action="store_true", help="only run jmed-edge (HF and GGUF)")
    parser.add_argument("--skip-gguf", action="store_true", help="do not convert and time a Q8_0 copy")
    args = parser.parse_args()

    from jmed_edge.models.default import materialise

    model = args.model or materialise()
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    questions = make_questions(args.n + DEV_SIZE, args.seed)
    medqa, task_dir = write_inputs(questions[: args.n], questions[args.n :], work, args.shots)
    print(f"{args.n} questions in {medqa}; model {model}; {args.shots}-shot; {args.threads} threads, "
          f"batch {args.batch_size}")  # fmt: skip

    results: dict = {"model": str(model), "n": args.n, "shots": args.shots, "threads": args.threads,
                     "batch_size": args.batch_size}  # fmt: skip
    jmed = run_jmed(model, medqa, work / "jmed", args.batch_size, args.threads, args.shots)
    s = jmed["summary"]
    results["jmed_hf"] = {"accuracy": s["accuracy"], "wall_seconds": round(jmed["wall_seconds"], 1),
                          "eval_qps": s["timings"]["questions_per_second"],
                          "load_seconds": s["timings"]["load_seconds"]}  # fmt: skip
    if not args.skip_lmeval:
        lm = run_lmeval(model, task_dir, work / "lmeval-out", args.batch_size, args.threads)
        agree = sum(1 for k, v in jmed["picks"].items() if lm["picks"].get(k) == v)
        results["lmeval_hf"] = {"accuracy": lm["accuracy"], "wall_seconds": round(lm["wall_seconds"], 1),
                                "eval_seconds": round(lm["eval_seconds"], 1)}  # fmt: skip
        results["agreement"] = agree / len(jmed["picks"])
        results["accuracy_gap_points"] = round(100 * abs(s["accuracy"] - lm["accuracy"]), 2)
        results["speedup_wall"] = round(lm["wall_seconds"] / jmed["wall_seconds"], 2)
    if not args.skip_gguf:
        from jmed_edge.convert.gguf import convert_to_gguf

        q8 = convert_to_gguf(model, work / "gguf", quants=("q8_0",), verify=False, force=True)["Q8_0"]
        gg = run_jmed(q8, medqa, work / "jmed-gguf", args.batch_size, args.threads, args.shots)
        g = gg["summary"]
        results["jmed_gguf_q8_0"] = {"accuracy": g["accuracy"], "wall_seconds": round(gg["wall_seconds"], 1),
                                     "eval_qps": g["timings"]["questions_per_second"],
                                     "agreement_with_hf": sum(1 for k, v in gg["picks"].items()
                                                              if jmed["picks"].get(k) == v) / len(gg["picks"])}  # fmt: skip
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    _print_table(results)
    return 0


def _print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    n = r["n"]
    table = Table(title=f"{n} MedQA-format questions, letter log-likelihood, {r['shots']}-shot")
    for col in ("harness", "accuracy", "wall s (incl. start-up)", "questions/s (wall)"):
        table.add_column(col)
    rows = [("jmed-edge (HF)", r["jmed_hf"]), ("lm-eval 0.4.13 (HF)", r.get("lmeval_hf")),
            ("jmed-edge (GGUF Q8_0)", r.get("jmed_gguf_q8_0"))]  # fmt: skip
    for name, block in rows:
        if block:
            table.add_row(name, f"{block['accuracy']:.3f}", f"{block['wall_seconds']:.1f}",
                          f"{n / block['wall_seconds']:.2f}")  # fmt: skip
    Console().print(table)
    if "speedup_wall" in r:
        Console().print(f"agreement {r['agreement']:.3f}; accuracy gap {r['accuracy_gap_points']} points; "
                        f"jmed-edge is {r['speedup_wall']}x lm-eval on wall time")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
