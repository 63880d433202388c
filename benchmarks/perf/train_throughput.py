"""Training throughput: ``jmed-edge train`` against a plain transformers Trainer + peft loop.

Both train the same LoRA (same model, tokenized examples, batch size, steps, learning rate and
seed) in the same process, alternating, and count the tokens that are not padding per second
of ``Trainer.train()``. The plain loop is what a user would write first: random batches padded
with ``DataCollatorForSeq2Seq`` and the model's own loss over every position. jmed-edge batches
examples of similar length and projects only response positions onto the vocabulary.

    python benchmarks/perf/train_throughput.py [--model PATH] [--steps N] [--repeats R]

Default: the embedded default model (SmolLM2-135M-Instruct) on the bundled medical instructions.
The machine may be shared: the ratio within one run is what to compare, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any


def _recipe(model: str, steps: int, batch_size: int, max_length: int, template: str) -> Any:
    from jmed_edge.resources import shipped
    from jmed_edge.train.recipe import validate_recipe

    return validate_recipe({
        "model": {"path": model},
        "data": {"files": [str(shipped("recipes/data/medical_instruct_sample.jsonl"))], "template": template},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "train": {"max_steps": steps, "lr": 2e-4, "schedule": "cosine", "batch_size": batch_size,
                  "max_length": max_length, "seed": 42, "precision": "fp32"},
        "output": {"checkpoint_every": 10**9},
    })  # fmt: skip


class Clock:
    """A TrainerCallback timing ``Trainer.train()`` the same way for both loops (wall and CPU time)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.tokens = state.num_input_tokens_seen
        self.loss = [e["loss"] for e in state.log_history if "loss" in e][-1]

    def result(self) -> dict[str, float]:
        return {"tokens": self.tokens, "seconds": self.wall, "cpu_seconds": self.cpu, "loss": self.loss}


def run_jmed(recipe: Any, work: Path) -> dict[str, float]:
    from jmed_edge.train import run_training

    clock = Clock()
    run_training(recipe, out=work / "jmed", force=True, progress=False, callbacks=[clock])
    return clock.result()


def run_plain(recipe: Any, work: Path) -> dict[str, float]:
    """A plain Trainer + peft loop over the very same tokenized examples."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.trainer_callback import PrinterCallback

    from jmed_edge.train.data import load_examples
    from jmed_edge.train.model import load_tokenizer, resolve_base_path

    base = resolve_base_path(recipe.model.path)
    tokenizer = load_tokenizer(base)
    examples, _ = load_examples(recipe, tokenizer)
    t, lora = recipe.train, recipe.lora
    set_seed(t.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                             target_modules=lora.target_modules, task_type="CAUSAL_LM"))  # fmt: skip
    args = TrainingArguments(
        output_dir=str(work / "plain"), per_device_train_batch_size=t.batch_size, max_steps=t.max_steps,
        learning_rate=t.lr, lr_scheduler_type=t.schedule, seed=t.seed, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, remove_unused_columns=False, use_cpu=not torch.cuda.is_available(),
        include_num_input_tokens_seen="non_padding",
    )  # fmt: skip
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    clock = Clock()
    trainer = Trainer(
        model=model, args=args, train_dataset=examples, data_collator=collator, callbacks=[clock]
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return clock.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="default", help="local HF model folder (default: the embedded default model)"
    )
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run (default 12)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--template", default="medpalm", choices=("medpalm", "alpaca", "chat"))
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each (best is reported)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import logging

    import torch
    from rich.console import Console
    from rich.table import Table

    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("jmed_edge").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = _recipe(args.model, args.steps, args.batch_size, args.max_length, args.template)
    runs: dict[str, list[dict[str, float]]] = {"plain Trainer + peft": [], "jmed-edge train": []}
    with tempfile.TemporaryDirectory(prefix="jmed-throughput-") as tmp:
        for i in range(args.repeats):
            order = [("jmed-edge train", run_jmed), ("plain Trainer + peft", run_plain)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                result = fn(recipe, Path(tmp))
                result["tps"] = result["tokens"] / result["seconds"]
                result["tps_cpu"] = result["tokens"] / result["cpu_seconds"]
                runs[name].append(result)
    best = {name: max(r["tps"] for r in results) for name, results in runs.items()}
    best_cpu = {name: max(r["tps_cpu"] for r in results) for name, results in runs.items()}
    ratio = best["jmed-edge train"] / best["plain Trainer + peft"]
    ratio_cpu = best_cpu["jmed-edge train"] / best_cpu["plain Trainer + peft"]

    table = Table(title=f"LoRA training throughput: {args.model}, {args.steps} steps x batch {args.batch_size}, "
                        f"max length {args.max_length}, {args.template} template")  # fmt: skip
    columns = (
        "loop",
        "runs",
        "tokens",
        "seconds",
        "tokens/s",
        "tokens/s median",
        "tokens/CPU-s",
        "final loss",
    )
    for column in columns:
        table.add_column(column, justify="right" if column != "loop" else "left")
    for name, results in runs.items():
        top = max(results, key=lambda r: r["tps"])
        table.add_row(name, str(len(results)), f"{top['tokens']:,}", f"{top['seconds']:.1f}", f"{top['tps']:,.0f}",
                      f"{statistics.median(r['tps'] for r in results):,.0f}", f"{best_cpu[name]:,.0f}",
                      f"{top['loss']:.3f}")  # fmt: skip
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(
        f"jmed-edge / plain: [bold]{ratio:.2f}x[/] tokens (not padding) per second, "
        f"{ratio_cpu:.2f}x per CPU-second (best run of each; columns other than median show the best run)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": runs, "ratio": ratio, "ratio_cpu": ratio_cpu, "args": vars(args)},
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
