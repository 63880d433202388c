"""The transformers Trainer as jmed-edge configures it: recipe settings -> TrainingArguments.

Imported only when training starts (it imports transformers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

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
    target = labels[:, 1:][labels[:, 1:] != IGNORE]
    loss = F.cross_entropy(outputs.logits.float(), target.to(outputs.logits.device), reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else max(target.numel(), 1))


class LengthGroupedOrder:
    """Batches of similar length, in a random order that is fixed by (seed, epoch).

    Shuffle, cut into mega-batches of 50 batches, sort each by length and cut it into batches
    (as transformers' LengthGroupedSampler does), then shuffle the order of the batches: its
    sampler keeps them longest-first within each mega-batch, so the loss of the first 50 steps
    traces example length rather than learning. Under data parallelism every process takes
    ``batch_size`` consecutive indices, so each process's batch is length-homogeneous.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, mega: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.mega = lengths, batch_size, seed, mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.mega
        batches: list[list[int]] = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        rest = [i for b in batches if len(b) < self.batch_size for i in b]  # one short batch, last
        for index in torch.randperm(len(full), generator=g).tolist():
            yield from full[index]
        yield from rest


class JmedTrainer(Trainer):
    """The Trainer with ``LengthGroupedOrder`` batches when ``group_by_length`` is set."""

    def __init__(self, *args: Any, group_by_length: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_by_length = group_by_length

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_length:
            return super()._get_train_sampler(dataset)
        lengths = [len(example["input_ids"]) for example in dataset]
        return LengthGroupedOrder(lengths, self.args.per_device_train_batch_size, self.args.seed)


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
        train_sampling_strategy="random",  # length grouping: LengthGroupedOrder, set in build_trainer
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
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as TqdmProgress

    from jmed_edge.train.progress import ProgressCallback

    selective = accepts_logits_mask(model)
    progress_cb = ProgressCallback(f"training {Path(recipe.source).stem or 'recipe'}") if progress else None

    trainer = JmedTrainer(
        group_by_length=recipe.train.group_by_length,
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
