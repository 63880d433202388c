"""The transformers Trainer as jmed-edge configures it: recipe settings -> TrainingArguments."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jmed_edge.train.data import IGNORE, Tokenized
from jmed_edge.train.model import Hardware
from jmed_edge.train.recipe import Recipe


class PadCollator:
    """Pad each batch to its own longest example (a multiple of 8 on GPU, for tensor cores).

    With ``keep_mask`` it also marks, as ``logits_to_keep``, the positions whose next token is a
    response token: the model then projects only those onto the vocabulary. Prompt positions
    carry no loss, and the output head (with the loss over a ~50-150k vocabulary) is a large
    share of a small model's compute.
    """

    def __init__(self, pad_id: int, multiple: int = 1, keep_mask: bool = False) -> None:
        self.pad_id = pad_id
        self.multiple = multiple
        self.keep_mask = keep_mask

    def __call__(self, batch: list[Tokenized]) -> dict[str, Any]:
        import torch

        longest = max(len(e["input_ids"]) for e in batch)
        width = -(-longest // self.multiple) * self.multiple
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, example in enumerate(batch):
            n = len(example["input_ids"])
            ids[row, :n] = torch.tensor(example["input_ids"])
            labels[row, :n] = torch.tensor(example["labels"])
            mask[row, :n] = 1
        out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if self.keep_mask:
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != IGNORE
            out["logits_to_keep"] = keep
        return out


def response_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Next-token cross-entropy over the logits kept by ``PadCollator(keep_mask=True)``.

    Summed and divided by the response tokens of the whole accumulated batch, as transformers'
    own causal-LM loss does, so gradient accumulation gives the same update as one big batch.
    """
    import torch.nn.functional as F

    target = labels[:, 1:][labels[:, 1:] != IGNORE]
    loss = F.cross_entropy(outputs.logits.float(), target.to(outputs.logits.device), reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else max(target.numel(), 1))


def accepts_logits_mask(model: Any) -> bool:
    """Whether the causal LM under ``model`` (peft-wrapped or not) takes a boolean ``logits_to_keep``.

    transformers models that slice with ``slice_logits_to_keep`` accept a (batch, length) mask;
    a model with its own slicing code may take only an int, and then trains with its own loss.
    """
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    forward = type(inner).forward
    if "logits_to_keep" not in inspect.signature(forward).parameters:
        return False
    try:
        return "slice_logits_to_keep" in inspect.getsource(forward)
    except (OSError, TypeError):
        return False


def training_arguments(recipe: Recipe, ckpt: Path, hardware: Hardware, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    t, o = recipe.train, recipe.output
    evaluate = has_eval and t.eval_every is not None
    return TrainingArguments(
        output_dir=str(ckpt),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.schedule,
        warmup_steps=t.warmup,
        weight_decay=t.weight_decay,
        optim=t.optimizer,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        logging_strategy="steps",
        logging_steps=t.log_every,
        save_strategy="steps",
        save_steps=o.checkpoint_every,
        save_total_limit=o.keep_checkpoints,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=t.eval_every if evaluate else None,
        seed=t.seed,
        data_seed=t.seed,
        bf16=hardware.precision == "bf16",
        fp16=hardware.precision == "fp16",
        use_cpu=hardware.device == "cpu",
        # Batches of similar length waste little compute on padding.
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


def build_trainer(
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    train_set: list[Tokenized],
    eval_set: list[Tokenized],
    ckpt: Path,
    hardware: Hardware,
    progress: bool,
    callbacks: Sequence[Any],
) -> tuple[Any, Any]:
    """The Trainer and its progress callback (None when progress is off)."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as TqdmProgress

    from jmed_edge.train.progress import ProgressCallback

    selective = accepts_logits_mask(model)
    progress_cb = ProgressCallback(f"training {Path(recipe.source).stem or 'recipe'}") if progress else None
    trainer = Trainer(
        model=model,
        args=training_arguments(recipe, ckpt, hardware, bool(eval_set)),
        train_dataset=train_set,
        eval_dataset=eval_set or None,
        data_collator=PadCollator(tokenizer.pad_token_id, 8 if hardware.device == "cuda" else 1, selective),
        compute_loss_func=response_loss if selective else None,
        processing_class=tokenizer,
        callbacks=[*([progress_cb] if progress_cb else []), *callbacks],
    )
    # Our own progress replaces the Trainer's log printing and tqdm bar.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(TqdmProgress)
    return trainer, progress_cb
