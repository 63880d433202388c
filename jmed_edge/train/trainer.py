"""``run_training``: a recipe in, a peft LoRA adapter folder (with its manifest) out.

The loop is transformers' Trainer over a peft model: it brings gradient accumulation, mixed
precision, checkpoint rotation, exact resumption (optimizer, scheduler, RNG, data position) and
``accelerate launch`` for DDP/FSDP. What this module adds: checks that fail before anything is
written, length-grouped batches with per-batch padding, progress, an adapter saved on Ctrl-C,
and the artifact manifest.

Checkpoints live beside the output, in ``<out>.checkpoints/``, so that a killed run can resume
while the output folder itself only ever appears complete (written through ``staging_dir``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jmed_edge.errors import ArtifactError, ConfigError
from jmed_edge.fsutil import staging_dir
from jmed_edge.manifest import Manifest, parent_record, read_manifest
from jmed_edge.train.recipe import (
    SECTIONS,
    Recipe,
    apply_overrides,
    changed_settings,
    data_hashes,
    fingerprint_config,
    load_recipe,
    recipe_fingerprint,
    validate_recipe,
)

log = logging.getLogger(__name__)

RECIPE_FILE = "jmed_recipe.json"  # in the checkpoints folder: what the checkpoints were trained with
LOG_FILE = "training_log.json"  # in the adapter: the Trainer's log history (loss, lr, tokens per step)


@dataclass
class _Run:
    """What the manifest records about one training run, beyond the Trainer's own state."""

    recipe: Recipe
    base: Path
    hardware: Any
    stats: Any
    targets: list[str]
    train_examples: int
    eval_examples: int
    base_summary: dict[str, Any]
    tokens_before: int = 0  # tokens seen by the run this one resumed
    seconds: float = 0.0  # of training in this process (not evaluation)
    eval_loss: float | None = None
    eval_loss_start: float | None = None  # of the base + fresh adapter, the yardstick for eval_loss


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the adapter so far was saved to ``adapter``."""

    def __init__(self, adapter: Path, step: int, max_steps: int) -> None:
        super().__init__(f"interrupted at step {step}/{max_steps}")
        self.adapter, self.step, self.max_steps = adapter, step, max_steps


def checkpoints_dir(out: Path) -> Path:
    return out.parent / f"{out.name}.checkpoints"


def _as_recipe(recipe: Recipe | str | Path, overrides: Iterable[str]) -> Recipe:
    overrides = list(overrides)
    if not isinstance(recipe, Recipe):
        return load_recipe(recipe, overrides)
    if not overrides:
        return recipe
    raw = apply_overrides(recipe.model_dump(include=set(SECTIONS)), overrides)
    return validate_recipe(raw, source=recipe.source, base_dir=Path(recipe.base_dir), shipped=recipe.shipped)


def last_checkpoint(out: str | Path) -> Path | None:
    """The newest resumable checkpoint of the adapter folder ``out`` (None when there is none)."""
    return _last_checkpoint(checkpoints_dir(Path(out).expanduser().absolute()))


def _last_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


def _preflight(recipe: Recipe, out: Path, resume: bool, force: bool) -> Path | None:
    """Refuse early (before loading anything) when the output or checkpoints say so."""
    from jmed_edge.fsutil import check_writable, refuse_overlap

    if recipe.model.path != "default":
        refuse_overlap(out, {"base model": Path(recipe.model.path)})
    check_writable(out.parent)
    ckpt = checkpoints_dir(out)
    if resume:
        last = _last_checkpoint(ckpt)
        if last is None:
            raise ConfigError(f"--resume: no checkpoint in {ckpt}; run without --resume to start training")
        saved = (
            json.loads((ckpt / RECIPE_FILE).read_text(encoding="utf-8"))
            if (ckpt / RECIPE_FILE).exists()
            else None
        )
        if saved and saved["fingerprint"] != recipe_fingerprint(recipe):
            changed = changed_settings(saved["config"], fingerprint_config(recipe)) or ["data file contents"]
            raise ConfigError(
                f"--resume: the checkpoints in {ckpt} were trained with other settings ({', '.join(changed)}); "
                "restore them, or pass --force without --resume to start over"
            )
        return last
    if out.exists() and not force:
        raise ArtifactError(
            f"{out} already exists; pass --force to replace it, --resume to continue it, or pick another --out"
        )
    if _last_checkpoint(ckpt) is not None and not force:
        raise ArtifactError(
            f"{ckpt} holds checkpoints of an earlier run; pass --resume to continue it or --force to start over"
        )
    return None


def run_training(
    recipe: Recipe | str | Path,
    out: str | Path | None = None,
    overrides: Iterable[str] = (),
    resume: bool = False,
    *,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> Path:
    """Train a LoRA adapter from a recipe (object, file or shipped name); return the adapter folder.

    ``resume`` continues from the last checkpoint in ``<out>.checkpoints`` at the same step and
    data order; ``force`` replaces an existing output and its checkpoints. ``callbacks`` are extra
    transformers ``TrainerCallback``s (a UI's progress, a test's interruption).
    """
    recipe = _as_recipe(recipe, overrides)
    out = Path(out or recipe.output.dir).expanduser().absolute()
    last = _preflight(recipe, out, resume, force)

    from transformers import set_seed

    from jmed_edge.train.data import load_examples, split_eval
    from jmed_edge.train.model import (
        add_lora,
        base_summary,
        check_target_modules,
        load_base,
        load_tokenizer,
        resolve_base_path,
        resolve_hardware,
    )

    hardware = resolve_hardware(recipe.train.precision)
    base = resolve_base_path(recipe.model.path)
    tokenizer = load_tokenizer(base)
    examples, stats = load_examples(recipe, tokenizer)
    train_set, eval_set = split_eval(examples, recipe.data.eval_split, recipe.train.seed)
    set_seed(recipe.train.seed)
    model = load_base(base, recipe.model.quantization, hardware)
    targets = check_target_modules(model, recipe.lora.target_modules)
    model = add_lora(
        model, recipe.lora, targets, recipe.model.quantization == "nf4", recipe.train.gradient_checkpointing
    )

    ckpt = checkpoints_dir(out)
    _prepare_checkpoints(ckpt, recipe, fresh=last is None)
    from jmed_edge.train.loop import build_trainer

    trainer, progress_cb = build_trainer(
        recipe, model, tokenizer, train_set, eval_set, ckpt, hardware, progress, callbacks
    )
    run = _Run(recipe, base, hardware, stats, targets, len(train_set), len(eval_set), base_summary(base))
    if last is not None:
        run.tokens_before = json.loads((last / "trainer_state.json").read_text()).get(
            "num_input_tokens_seen", 0
        )
        log.info("resuming from %s", last)
    if eval_set and last is None:
        run.eval_loss_start = trainer.evaluate()["eval_loss"]
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(last) if last else None)
    except KeyboardInterrupt:
        run.seconds = time.perf_counter() - started
        if progress_cb is not None:
            progress_cb.close()
        step = trainer.state.global_step
        if step == 0:
            raise
        if _last_checkpoint(ckpt) != ckpt / f"checkpoint-{step}":
            trainer._save_checkpoint(trainer.model, trial=None)  # resumable state at this very step
        _write_adapter(trainer, tokenizer, out, run, complete=False)
        raise TrainingInterrupted(out, step, trainer.state.max_steps) from None
    run.seconds = time.perf_counter() - started
    if eval_set:
        run.eval_loss = trainer.evaluate()["eval_loss"]
    _write_adapter(trainer, tokenizer, out, run, complete=True)
    return out


def _prepare_checkpoints(ckpt: Path, recipe: Recipe, fresh: bool) -> None:
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        if fresh and ckpt.exists():
            shutil.rmtree(ckpt)  # --force: the old run's checkpoints must not be resumed by mistake
        ckpt.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": recipe_fingerprint(recipe), "config": fingerprint_config(recipe)}
        (ckpt / RECIPE_FILE).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    state.wait_for_everyone()


def _write_adapter(trainer: Any, tokenizer: Any, out: Path, run: _Run, complete: bool) -> None:
    """Save the adapter (every process takes part, as FSDP gathers weights) and seal it into ``out``."""
    from accelerate import PartialState

    ckpt = checkpoints_dir(out)
    scratch = ckpt / "adapter-latest"
    trainer.save_model(str(scratch))  # writes on the main process only, gathering shards if needed
    state = PartialState()
    if state.is_main_process:
        with staging_dir(out, force=True) as tmp:
            for file in scratch.iterdir():
                if file.is_file() and file.name != "training_args.bin":
                    shutil.copy2(file, tmp / file.name)
            tokenizer.save_pretrained(tmp)
            history = trainer.state.log_history
            (tmp / LOG_FILE).write_text(json.dumps(history, indent=1), encoding="utf-8")
            manifest = _manifest(trainer, run, complete)
            card = _adapter_card(manifest)  # replaces peft's placeholder card
            (tmp / "README.md").write_text(card, encoding="utf-8")
            manifest.seal(tmp)
        shutil.rmtree(scratch, ignore_errors=True)
        log.info("adapter written to %s", out)
    state.wait_for_everyone()


def _manifest(trainer: Any, run: _Run, complete: bool) -> Manifest:
    recipe, base, stats, state = run.recipe, run.base, run.stats, trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    window = max(1, min(5, len(losses) // 4))
    tokens = (state.num_input_tokens_seen or 0) - run.tokens_before
    base_manifest = read_manifest(base, required=False)
    details = {
        "fingerprint": recipe_fingerprint(recipe),
        "complete": complete,
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs": round(state.epoch or 0.0, 3),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "loss_start": _mean(losses[:window]) if losses else None,  # means: single steps are noisy
        "loss_end": _mean(losses[-window:]) if losses else None,
        "eval_loss_start": run.eval_loss_start,
        "eval_loss": run.eval_loss,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_second": round(tokens / max(run.seconds, 1e-9), 1),
        "train_seconds": round(run.seconds, 1),
        "device": run.hardware.device,
        "precision": run.hardware.precision,
        "quantization": recipe.model.quantization,
        "target_modules": run.targets,
        "base": run.base_summary,
        "data": data_hashes(recipe),
        "examples": {"train": run.train_examples, "eval": run.eval_examples,
                     "truncated": stats.truncated, "dropped": stats.dropped, "per_file": stats.per_file},
    }  # fmt: skip
    return Manifest(
        kind="adapter",
        format="peft-adapter",
        name=f"{base_manifest.name if base_manifest and base_manifest.name else base.name}-lora",
        parent=parent_record(base),
        config=recipe.resolved() | {"recipe_file": recipe.source},
        license=base_manifest.license if base_manifest else "unknown",
        details=details,
    )


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def _adapter_card(manifest: Manifest) -> str:
    d, c = manifest.details, manifest.config
    data = "\n".join(f"- `{Path(p).name}` (sha256 `{h[:12]}`)" for p, h in d["data"].items())
    state = (
        "complete"
        if d["complete"]
        else f"**interrupted** at step {d['steps']} of {d['max_steps']} (resume with --resume)"
    )
    return (
        f"# {manifest.name}\n\n"
        f"A LoRA adapter ({state}) for `{manifest.parent['path'] if manifest.parent else '?'}`, "
        f"trained with jmed-edge from `{c.get('recipe_file', '')}`.\n\n"
        f"- LoRA: r={c['lora']['r']}, alpha={c['lora']['alpha']}, dropout={c['lora']['dropout']}, "
        f"on {', '.join(d['target_modules'])}\n"
        f"- quantization of the base while training: {d['quantization']}; precision {d['precision']} on {d['device']}\n"
        f"- {d['steps']} steps, {d['examples']['train']} training examples, template `{c['data']['template']}`; "
        f"loss {d['loss_start']} -> {d['loss_end']} (means of the first and last steps), "
        f"eval loss {d['eval_loss_start']} -> {d['eval_loss']}\n"
        f"- licence: {manifest.license} (inherited from the base model)\n\n"
        f"Data:\n{data}\n\n"
        "Merge it into its base with `jmed-edge merge THIS_FOLDER --out MERGED`.\n"
    )


def adapter_matches(adapter: Path, recipe: Recipe) -> bool:
    """True when ``adapter`` is a complete adapter trained with exactly this recipe and data."""
    manifest = read_manifest(adapter, required=False) if Path(adapter).is_dir() else None
    if manifest is None or manifest.kind != "adapter":
        return False
    details = manifest.details
    return bool(details.get("complete")) and details.get("fingerprint") == recipe_fingerprint(recipe)
