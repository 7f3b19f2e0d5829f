"""train.yaml as a pydantic model. Unknown keys are errors naming file:line (via ``config.load_model``).

Relative paths in a train.yaml are resolved against the folder that holds the file, so a config can
be run from anywhere. A ``TrainConfig`` built in Python takes paths as given (relative to the cwd).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from ..config import Strict, load_model
from ..types import stable_hash

# The LoRA ranks vLLM serves (``--max-lora-rank`` choices). An adapter with another rank cannot be
# hot-swapped there, so evalkit refuses to train one.
VLLM_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)

Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
]


class LoraSettings(Strict):
    """LoRA adapter shape. ``target_modules: all-linear`` adapts every linear layer except the output head."""

    r: int = 16
    alpha: int = 32
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: Union[Literal["all-linear"], list[str]] = "all-linear"

    @field_validator("r")
    @classmethod
    def _vllm_rank(cls, v: int) -> int:
        if v not in VLLM_LORA_RANKS:
            raise ValueError(f"r={v} cannot be served by vLLM; use one of {', '.join(map(str, VLLM_LORA_RANKS))}")
        return v

    @field_validator("alpha")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be positive")
        return v

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and (not v or not all(isinstance(x, str) and x for x in v)):
            raise ValueError("a non-empty list of module names, or 'all-linear'")
        return v


class MixSettings(Strict):
    """General-purpose examples mixed into the task data (the usual remedy for catastrophic forgetting).

    ``fraction`` is the share of the *final* training set that comes from ``file``: 0.2 with 800 task
    examples adds 200 general ones.
    """

    file: str
    fraction: float = Field(..., gt=0.0, lt=1.0)


class TrainConfig(Strict):
    """Everything that determines a training run. Recorded in full in candidate.json."""

    base: str  # base checkpoint directory (Hugging Face format)
    train: str  # chat JSONL; each line's messages end with the assistant turn to learn
    val: str | None = None  # chat JSONL; when absent, ``val_fraction`` of ``train`` is held out
    val_fraction: float | None = Field(None, ge=0.0, lt=1.0)  # default 0.1 without 'val'; 0: no validation
    mix: MixSettings | None = None
    quantize: Literal["nf4", "none"] = "nf4"  # nf4: QLoRA (4-bit base); none: plain LoRA on a 16-bit base
    # compute dtype (and the base's, unquantized). auto: bfloat16 on GPUs and on CPUs with native bf16
    # (AVX512-BF16 / AMX); float32 on other CPUs, where bf16 matmuls are emulated and ~4x slower.
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    lr: float = Field(2e-4, gt=0.0)  # adapters want 1e-4..2e-4, not TRL's full fine-tuning default 2e-5
    scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: float = Field(3.0, gt=0.0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(1024, ge=8)
    eval_every: Union[Literal["epoch"], int] = "epoch"  # "epoch" or a number of optimizer steps
    patience: int | None = Field(2, ge=1)  # stop after this many evaluations in a row without improvement; null: never
    restore_best: bool = True  # after an early stop, keep the adapter from the best evaluation
    log_every: int = Field(10, ge=1)  # optimizer steps between rows of the loss table
    gradient_checkpointing: bool | None = None  # default: on for CUDA (memory), off on the CPU (speed)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    name: str | None = None  # candidate name; default: <train file stem>-<quantize>-r<r>-<config hash>

    @field_validator("eval_every")
    @classmethod
    def _eval_every(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("'epoch' or a positive number of steps")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v.startswith(".")):
            raise ValueError("a plain name (no '/', not starting with '.')")
        return v

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.val is not None and self.val_fraction is not None:
            raise ValueError("set either 'val' (a file) or 'val_fraction', not both")
        return self

    @property
    def held_out_fraction(self) -> float:
        """The share of ``train`` held out for validation (0 when a ``val`` file is given)."""
        if self.val is not None:
            return 0.0
        return 0.1 if self.val_fraction is None else self.val_fraction

    # --- derived ---------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def candidate_name(self) -> str:
        if self.name:
            return self.name
        stem = Path(self.train).stem or "train"
        return f"{stem}-{'qlora' if self.quantize == 'nf4' else 'lora'}-r{self.lora.r}-{stable_hash(self.identity(), 6)}"

    def resolved(self, root: Path) -> "TrainConfig":
        """A copy whose relative paths are taken relative to ``root`` (the folder of train.yaml)."""

        def fix(p: str | None) -> str | None:
            if p is None:
                return None
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else (root / q))

        upd: dict[str, Any] = {"base": fix(self.base), "train": fix(self.train), "val": fix(self.val)}
        if self.mix is not None:
            upd["mix"] = self.mix.model_copy(update={"file": fix(self.mix.file)})
        return self.model_copy(update=upd)


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read train.yaml; errors are one line naming ``file:line``. Relative paths resolve beside the file."""
    p = Path(path)
    cfg = load_model(TrainConfig, p, overrides)
    return cfg.resolved(p.resolve().parent)
