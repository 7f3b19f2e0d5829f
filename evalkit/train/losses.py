"""One point of a loss curve: what the training monitor records and ``TrainResult`` carries.

Its own module so the monitor (``callbacks``) and the trainer both import it without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossPoint:
    step: int
    epoch: float
    loss: float

    def as_dict(self) -> dict[str, float]:
        return {"step": self.step, "epoch": round(self.epoch, 4), "loss": self.loss}
