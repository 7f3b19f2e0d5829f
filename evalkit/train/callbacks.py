"""The training loop's callback: progress bar and loss table on stderr, early stopping on validation
loss (keeping the best adapter's weights), and the overfitting warning.

Imported only when training starts (it needs transformers).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from transformers import TrainerCallback

from .config import TrainConfig
from .losses import LossPoint

WarnFn = Callable[[str], None]


class TrainingMonitor(TrainerCallback):
    """Progress bar + loss table on stderr; early stopping on validation loss; overfitting warning."""

    def __init__(self, cfg: TrainConfig, *, progress: bool, warn: WarnFn) -> None:
        self.cfg, self.progress, self.warn = cfg, progress, warn
        self.train_points: list[LossPoint] = []
        self.val_points: list[LossPoint] = []
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_state: dict | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.overfitting = False
        self._window: list[float] = []  # train losses logged since the last evaluation
        self._prev_window: float | None = None
        self._pending: tuple | None = None
        self.step_times: list[float] = []
        self._step_started: float | None = None
        self.bar: Any = None

    def _write(self, line: str) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def _row(self, step: int, epoch: float, train: float | None, val: float | None, lr: float | None, note: str = "") -> None:
        t = f"{train:10.4f}" if train is not None else f"{'-':>10}"
        v = f"{val:10.4f}" if val is not None else f"{'-':>10}"
        r = f"{lr:9.2e}" if lr is not None else f"{'-':>9}"
        self._write(f"{step:>7} {epoch:>6.2f} {t} {v} {r}  {note}".rstrip())

    def on_train_begin(self, args, state, control, **kw):
        from tqdm import tqdm

        self.bar = tqdm(total=state.max_steps, desc="train", unit="step", file=sys.stderr, disable=not self.progress, dynamic_ncols=True)
        self._write(f"{'step':>7} {'epoch':>6} {'train_loss':>10} {'val_loss':>10} {'lr':>9}")

    def on_step_end(self, args, state, control, **kw):
        if self._step_started is not None:
            self.step_times.append(time.perf_counter() - self._step_started)
            self._step_started = None
        if self.bar is not None:
            self.bar.update(1)
        if state.global_step >= state.max_steps:
            control.should_log = True  # the loss curve always ends at the last step


    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" in logs:
            loss = float(logs["loss"])
            self.train_points.append(LossPoint(state.global_step, float(state.epoch or 0.0), loss))
            self._window.append(loss)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}")
            # Held back one moment: an evaluation at this step prints one row with both losses.
            self._flush()
            self._pending = (state.global_step, float(state.epoch or 0.0), loss, logs.get("learning_rate"))

    def _flush(self) -> None:
        if self._pending is not None:
            step, epoch, loss, lr = self._pending
            self._row(step, epoch, loss, None, lr)
            self._pending = None

    def on_step_begin(self, args, state, control, **kw):
        self._flush()
        self._step_started = time.perf_counter()

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        if not metrics or "eval_loss" not in metrics:
            return
        val = float(metrics["eval_loss"])
        epoch = float(state.epoch or 0.0)
        prev_val = self.val_points[-1].loss if self.val_points else None
        self.val_points.append(LossPoint(state.global_step, epoch, val))
        train_now = sum(self._window) / len(self._window) if self._window else None
        note = ""
        if prev_val is not None and val > prev_val and train_now is not None and self._prev_window is not None and train_now < self._prev_window:
            self.overfitting = True
            note = "overfitting?"
            self.warn(
                f"overfitting: train loss fell ({self._prev_window:.4f} -> {train_now:.4f}) while validation loss "
                f"rose ({prev_val:.4f} -> {val:.4f}) at step {state.global_step}"
            )
        if train_now is not None:
            self._prev_window = train_now
        self._window = []
        if self.best is None or val < self.best:
            self.best, self.best_step, self.bad_evals = val, state.global_step, 0
            if self.cfg.restore_best and model is not None:
                from peft import get_peft_model_state_dict

                self.best_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
            note = note or "best"
        else:
            self.bad_evals += 1
            if self.cfg.patience is not None and self.bad_evals >= self.cfg.patience:
                self.stopped_early = True
                control.should_training_stop = True
                note = (note + " " if note else "") + f"early stop (no improvement for {self.bad_evals} evaluations)"
        lr = None
        if self._pending is not None and self._pending[0] == state.global_step:
            lr = self._pending[3]
            self._pending = None
        self._flush()
        last_train = self.train_points[-1].loss if self.train_points and self.train_points[-1].step == state.global_step else None
        self._row(state.global_step, epoch, last_train, val, lr, note)

    def on_train_end(self, args, state, control, **kw):
        self._flush()
        if self.bar is not None:
            self.bar.close()
