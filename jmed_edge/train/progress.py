"""Training progress on the terminal: step, loss, learning rate, tokens/s and ETA.

A rich progress bar when stderr is a terminal; otherwise (logs, CI, pipes) one plain line about
every tenth of the run, so a captured log still shows the loss going down.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback


class ProgressCallback(TrainerCallback):
    """Shows progress on the main process only."""

    def __init__(self, title: str) -> None:
        from rich.console import Console

        self.title = title
        self.console = Console(stderr=True, highlight=False)
        self.progress: Any = None
        self.task: Any = None
        self.loss: float | None = None
        self.lr: float | None = None
        self.start_step = 0
        self.start_tokens = 0
        self.start_time = 0.0
        self.next_line = 0

    def _fields(self, state: Any) -> dict[str, str]:
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        tokens = (state.num_input_tokens_seen or 0) - self.start_tokens
        return {
            "loss": "-" if self.loss is None else f"{self.loss:.4f}",
            "lr": "-" if self.lr is None else f"{self.lr:.2e}",
            "tps": f"{tokens / elapsed:,.0f}",
        }

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen or 0
        self.start_time = time.perf_counter()
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console,
            )  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task(
                self.title, total=state.max_steps, completed=state.global_step, **self._fields(state)
            )
        else:
            self.console.print(f"{self.title}: {state.max_steps} steps, starting at step {state.global_step}")

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        self.loss = float(logs["loss"])
        self.lr = float(logs.get("learning_rate", self.lr or 0.0))
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, **self._fields(state))
        elif state.global_step >= self.next_line or state.global_step == state.max_steps:
            self.next_line = state.global_step + max(1, state.max_steps // 10)
            done = state.global_step - self.start_step
            elapsed = time.perf_counter() - self.start_time
            eta = elapsed / max(done, 1) * (state.max_steps - state.global_step)
            f = self._fields(state)
            self.console.print(
                f"step {state.global_step}/{state.max_steps}  loss {f['loss']}  lr {f['lr']}  "
                f"{f['tps']} tok/s  elapsed {elapsed:.0f}s  ETA {eta:.0f}s"
            )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, **self._fields(state))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
