"""QLoRA / LoRA training with TRL's SFTTrainer: the adapter and its candidate.json.

The mapping is deliberately thin: ``TrainConfig`` -> ``BitsAndBytesConfig`` (nf4, double quantisation, bf16
compute where the hardware has bf16) + peft ``LoraConfig`` + TRL ``SFTConfig`` (assistant-only loss, the chat
template). evalkit adds what the tutorials leave out: validation each epoch or N steps, early stopping
with the best adapter restored, an overfitting warning, data mixing, a loss table, vLLM-compatibility
checks on the saved adapter, and a manifest that says exactly what was trained on what.

torch / transformers / peft / trl are imported inside functions so ``evalkit --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import __version__
from .._util.hf_bars import library_progress_bars
from ..errors import ConfigError, UserError, missing_extra
from ..models.weights import template_text_hash
from .config import VLLM_LORA_RANKS, TrainConfig, load_train_config
from .data import TrainingData, prepare_data, prompt_hash
from .losses import LossPoint
from .manifest import CANDIDATE_FILE, MANIFEST_VERSION, CandidateManifest, git_commit, library_versions, load_candidate, write_candidate

WarnFn = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` produced. ``candidate`` is the content of ``adapter_dir/candidate.json``."""

    adapter_dir: Path
    candidate: Mapping[str, Any] = field(hash=False, compare=False)
    train_losses: tuple[LossPoint, ...] = ()
    val_losses: tuple[LossPoint, ...] = ()
    stopped_early: bool = False
    overfitting: bool = False
    best_val_loss: float | None = None
    steps: int = 0
    wall_time_s: float = 0.0
    warnings: tuple[str, ...] = ()
    reused: bool = False  # an identical earlier run was found in adapter_dir; nothing was trained


def _stderr_warn(msg: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(f"warning: {msg}", file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(f"warning: {msg}", file=sys.stderr)


# --- model loading ------------------------------------------------------------------------------


def _resolve_device(cfg: TrainConfig) -> str:
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for, but no CUDA GPU is visible")
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def _device_description(device: str) -> str:
    import torch

    if device == "cuda":
        return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def resolve_dtype(cfg: TrainConfig, device: str) -> str:
    """The compute dtype ``auto`` means here: bf16 where the hardware does bf16, else fp16 (old GPUs) or fp32 (CPU)."""
    if cfg.dtype != "auto":
        return cfg.dtype
    import torch

    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    native = False
    try:
        native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch: assume emulation
        pass
    return "bfloat16" if native else "float32"



def _adapter_in_compute_dtype(model, dtype: str) -> None:
    """Keep the trainable (LoRA) weights in the compute dtype the config resolved to.

    TRL casts a quantized model's adapter to bfloat16 whatever the config says (the QLoRA paper's
    recipe). With ``dtype: float32`` that is wrong twice: the adapter is not what the manifest
    claims, and bf16 matmuls on the CPU go through oneDNN kernels whose results depend on the
    processor (AMX, AVX512-BF16 or AVX2 emulation), so the same config trained different adapters
    on different machines. bf16 and fp16 configs keep TRL's cast.
    """
    if dtype != "float32":
        return
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)

def check_base_dir(base: str | Path) -> Path:
    """A base checkpoint directory with a config.json; refuse already-quantized checkpoints for merging."""
    p = Path(base)
    if not p.is_dir():
        raise ConfigError(f"base: checkpoint directory not found: {base}")
    if not (p / "config.json").is_file():
        raise ConfigError(f"base: {base} has no config.json (expected a Hugging Face checkpoint directory)")
    return p


def _use_checkpointing(cfg: TrainConfig, device: str) -> bool:
    return cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else device == "cuda"


def load_base_for_training(cfg: TrainConfig, device: str):
    """The base model: 4-bit NF4 (double quantisation, ``dtype`` compute) for QLoRA, else plain ``dtype``."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = _torch_dtype(resolve_dtype(cfg, device))
    device_map = {"": torch.cuda.current_device()} if device == "cuda" else {"": "cpu"}
    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": device_map}
    if cfg.quantize == "nf4":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            raise missing_extra("QLoRA (quantize: nf4)", "train", e) from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*kernels.*")
        model = AutoModelForCausalLM.from_pretrained(cfg.base, **kwargs)
    if cfg.quantize == "nf4":
        from peft import prepare_model_for_kbit_training

        # SFTTrainer does not do this for us: freeze the base, upcast norms, make inputs carry grads.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=_use_checkpointing(cfg, device))
    return model


def load_tokenizer(base: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    if not tok.chat_template:
        raise ConfigError(f"base: {base} has no chat template; evalkit trains with the base model's own template")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _check_template(tok) -> None:
    """assistant_only_loss needs ``{% generation %}`` markers; TRL can patch the templates it knows."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tok.chat_template):
        return
    try:
        patched = get_training_chat_template(tok)
    except Exception:  # noqa: BLE001 - TRL raises ValueError/NotImplementedError for unknown templates
        patched = None
    if not patched:
        raise ConfigError(
            "base: the chat template has no {% generation %} markers and TRL has no training version of it, so "
            "the loss cannot be limited to assistant turns; add the markers around the assistant turn in "
            "chat_template.jinja"
        )


def _length_report(tok, data: TrainingData, max_len: int, warn: WarnFn) -> dict[str, int]:
    """Warn about examples max_seq_len cuts; refuse when it leaves nothing to learn (TRL would drop them all)."""

    def measure(convs) -> tuple[int, int, int]:
        too_long = no_target = longest = 0
        for conv in convs:
            ids = tok.apply_chat_template(list(conv), tokenize=True, return_dict=True)["input_ids"]
            longest = max(longest, len(ids))
            if len(ids) > max_len:
                too_long += 1
                prompt_ids = tok.apply_chat_template(
                    list(conv[:-1]), tokenize=True, return_dict=True, add_generation_prompt=True
                )["input_ids"]
                if len(prompt_ids) >= max_len:
                    no_target += 1
        return too_long, no_target, longest

    too_long, no_target, longest = measure(data.train)
    if no_target == len(data.train):
        raise ConfigError(
            f"max_seq_len: {max_len} tokens cut away the whole assistant turn of every training example "
            f"(the longest is {longest} tokens); raise max_seq_len"
        )
    if too_long:
        warn(f"{too_long} of {len(data.train)} training examples are longer than max_seq_len={max_len} tokens and are cut (longest: {longest})")
    if no_target:
        warn(f"{no_target} of them lose the whole assistant turn: they teach nothing and are dropped; raise max_seq_len")
    if data.val:
        _, val_lost, _ = measure(data.val)
        if val_lost == len(data.val):
            raise ConfigError(
                f"max_seq_len: {max_len} tokens cut away the whole assistant turn of every validation example; raise max_seq_len"
            )
        if val_lost:
            warn(f"{val_lost} of {len(data.val)} validation examples lose their whole assistant turn to max_seq_len and are not scored")
    return {"longest_tokens": longest, "truncated": too_long, "no_target": no_target}


def _lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules if isinstance(cfg.lora.target_modules, str) else list(cfg.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    return max(1, math.ceil(math.ceil(n_train / cfg.batch_size) / cfg.grad_accum))


def _sft_config(cfg: TrainConfig, device: str, work_dir: Path, n_train: int, has_val: bool):
    from trl import SFTConfig

    per_epoch = _steps_per_epoch(cfg, n_train)
    # Log the train loss at least once per evaluation, so the overfitting check has something to compare.
    log_every = cfg.log_every
    if has_val:
        log_every = min(log_every, per_epoch if cfg.eval_every == "epoch" else int(cfg.eval_every))
    eval_kwargs: dict[str, Any] = {"eval_strategy": "no"}
    if has_val:
        if cfg.eval_every == "epoch":
            eval_kwargs = {"eval_strategy": "epoch"}
        else:
            eval_kwargs = {"eval_strategy": "steps", "eval_steps": int(cfg.eval_every)}
    return SFTConfig(
        output_dir=str(work_dir),
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_seq_len,
        assistant_only_loss=True,
        bf16=resolve_dtype(cfg, device) == "bfloat16",
        fp16=resolve_dtype(cfg, device) == "float16",
        gradient_checkpointing=_use_checkpointing(cfg, device),
        # fused AdamW (transformers' default from torch 2.8, said here): one kernel that computes the
        # same bits on every CPU; the for-each path's sqrt comes from MKL VML, which does not
        optim="adamw_torch_fused",
        use_cpu=device == "cpu",
        logging_strategy="steps",
        logging_steps=max(1, log_every),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,  # evalkit draws its own bar and loss table
        dataloader_num_workers=0,
        **eval_kwargs,
    )


# --- the adapter --------------------------------------------------------------------------------


def check_adapter_for_vllm(adapter_dir: str | Path) -> dict[str, Any]:
    """Read adapter_config.json; return its shape. Raise if vLLM could not hot-swap it (evalkit never asks for that)."""
    conf = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    problems = []
    if conf.get("modules_to_save"):
        problems.append(f"modules_to_save={conf['modules_to_save']}")
    if conf.get("use_dora"):
        problems.append("DoRA")
    if conf.get("r") not in VLLM_LORA_RANKS:
        problems.append(f"r={conf.get('r')}")
    if conf.get("trainable_token_indices"):
        problems.append("trainable_token_indices")
    if problems:
        raise RuntimeError(f"the saved adapter in {adapter_dir} cannot be served by vLLM ({', '.join(problems)}): this is a bug in evalkit")
    tm = conf.get("target_modules")
    if isinstance(tm, list):  # peft expands all-linear to full module paths; the kinds are what a reader wants
        tm = sorted({t.rsplit(".", 1)[-1] for t in tm})
    return {
        "r": conf["r"],
        "alpha": conf.get("lora_alpha"),
        "dropout": conf.get("lora_dropout"),
        "target_modules": tm,
        "vllm_compatible": True,
    }


def _data_identity(data: TrainingData) -> dict[str, Any]:
    return {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in data.sources.items()}


def _reusable(out_dir: Path, cfg: TrainConfig, base_hash: str, data: TrainingData) -> dict[str, Any] | None:
    old = load_candidate(out_dir)
    if old is None or not (out_dir / "adapter_config.json").is_file():
        return None
    same = (
        old.get("numerics") == _numerics()
        and old.get("config") == cfg.identity()
        and old.get("base", {}).get("hash") == base_hash
        and old.get("data", {}).get("identity") == _data_identity(data)
    )
    return old if same else None


# Bump when the trainer changes the bits a config trains to (2: adapters in the config's dtype).
NUMERICS_REVISION = 2


def _numerics() -> dict[str, Any]:
    from .._util.repro import kernels_pinned

    return {"revision": NUMERICS_REVISION, "kernels_pinned": kernels_pinned()}


def _hash_of(path: Path, *, adapter: bool) -> str:
    from ..models import fingerprint
    from ..types import ModelSpec

    spec = ModelSpec(name="train", backend="hf", adapter=str(path)) if adapter else ModelSpec(name="train", backend="hf", path=str(path))
    return fingerprint(spec)


def _result_from_candidate(out_dir: Path, cand: Mapping[str, Any], *, reused: bool) -> TrainResult:
    m = cand.get("metrics", {})
    pts = lambda xs: tuple(LossPoint(int(p["step"]), float(p["epoch"]), float(p["loss"])) for p in xs)  # noqa: E731
    return TrainResult(
        adapter_dir=out_dir,
        candidate=cand,
        train_losses=pts(m.get("train_loss", [])),
        val_losses=pts(m.get("val_loss", [])),
        stopped_early=bool(m.get("stopped_early")),
        overfitting=bool(m.get("overfitting")),
        best_val_loss=m.get("best_val_loss"),
        steps=int(m.get("steps", 0)),
        wall_time_s=float(m.get("wall_time_s", 0.0)),
        warnings=tuple(cand.get("warnings", [])),
        reused=reused,
    )


def train(
    config: TrainConfig | str | Path,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    overwrite: bool = True,
    reuse: bool = False,
    warn: WarnFn | None = None,
) -> TrainResult:
    """Train a LoRA/QLoRA adapter; write it and ``candidate.json`` to ``out_dir``.

    ``config``: a TrainConfig or a path to train.yaml. ``out_dir``: default ``runs/<candidate name>``.
    ``overwrite``: replace an existing adapter there (False: a UserError; the CLI's default without --force). ``reuse``: when ``out_dir``
    already holds a run with the same config, base and data, return it without training.
    Progress bar and loss table go to stderr (``progress=False`` hides them; warnings still print).
    """
    cfg = load_train_config(config) if isinstance(config, (str, Path)) else config
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.candidate_name()
    notes: list[str] = []

    def _warn(msg: str) -> None:
        notes.append(msg)
        (warn or _stderr_warn)(msg)

    base_dir = check_base_dir(cfg.base)
    data = prepare_data(
        cfg.train,
        val_path=cfg.val,
        val_fraction=cfg.held_out_fraction,
        mix_path=cfg.mix.file if cfg.mix else None,
        mix_fraction=cfg.mix.fraction if cfg.mix else 0.0,
        seed=cfg.seed,
        warn=_warn,
    )
    base_hash = _hash_of(base_dir, adapter=False)
    if reuse:
        old = _reusable(out, cfg, base_hash, data)
        if old is not None:
            return _result_from_candidate(out, old, reused=True)
    if (out / "adapter_config.json").exists() and not overwrite:
        raise UserError(f"{out} already holds an adapter; choose another --out or pass --force to replace it")

    try:
        import datasets  # noqa: F401
        import torch  # noqa: F401
        import trl  # noqa: F401
    except ImportError as e:
        raise missing_extra("evalkit train", "train", e) from None

    started = time.time()
    with library_progress_bars(progress):
        return _train_loaded(cfg, out, data, base_dir, base_hash, started, progress=progress, warn=_warn, notes=notes)


def _train_loaded(
    cfg: TrainConfig,
    out: Path,
    data: TrainingData,
    base_dir: Path,
    base_hash: str,
    started: float,
    *,
    progress: bool,
    warn: WarnFn,
    notes: list[str],
) -> TrainResult:
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback, set_seed
    from trl import SFTTrainer

    _warn = warn
    device = _resolve_device(cfg)
    set_seed(cfg.seed)
    tok = load_tokenizer(base_dir)
    _check_template(tok)
    lengths = _length_report(tok, data, cfg.max_seq_len, _warn)
    model = load_base_for_training(cfg, device)
    quantized_layers = _count_4bit_layers(model)
    if cfg.quantize == "nf4" and quantized_layers == 0:
        raise RuntimeError("quantize: nf4 loaded no 4-bit layers: bitsandbytes did not quantize the base")

    train_ds = Dataset.from_list([{"messages": list(c)} for c in data.train])
    val_ds = Dataset.from_list([{"messages": list(c)} for c in data.val]) if data.val else None
    from .callbacks import TrainingMonitor

    monitor = TrainingMonitor(cfg, progress=progress, warn=_warn)
    work = Path(tempfile.mkdtemp(prefix="evalkit-train-"))
    try:
        args = _sft_config(cfg, device, work, len(data.train), val_ds is not None)
        with warnings.catch_warnings():
            # Noise a user cannot act on (the optional `kernels` package, use_cache with checkpointing).
            warnings.filterwarnings("ignore", message=".*kernels.*")
            warnings.filterwarnings("ignore", message=".*use_cache=True.*")
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=train_ds,
                eval_dataset=val_ds,
                processing_class=tok,
                peft_config=_lora_config(cfg),
                callbacks=[monitor],
            )
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            _adapter_in_compute_dtype(trainer.model, resolve_dtype(cfg, device))
            trainer.train()
        peft_model = trainer.model
        restored_from = None
        if cfg.restore_best and monitor.best_state is not None and monitor.best_step != trainer.state.global_step:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(peft_model, monitor.best_state)
            restored_from = monitor.best_step
        if (out / "adapter_config.json").exists():
            for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", CANDIDATE_FILE):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(out))
        steps = int(trainer.state.global_step)
        epochs_done = float(trainer.state.epoch or 0.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = time.time() - started
    adapter_info = check_adapter_for_vllm(out)
    adapter_info["hash"] = _hash_of(out, adapter=True)

    if monitor.stopped_early:
        _warn(
            f"stopped early at step {steps}: validation loss did not improve for {cfg.patience} evaluations"
            + (f"; kept the adapter from step {restored_from} (best validation loss {monitor.best:.4f})" if restored_from else "")
        )
    final_train = monitor.train_points[-1].loss if monitor.train_points else None
    candidate = CandidateManifest.model_validate({
        "kind": "evalkit.candidate",
        "manifest_version": MANIFEST_VERSION,
        "name": cfg.candidate_name(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "adapter": adapter_info,
        "base": {
            "path": str(base_dir.resolve()),
            "hash": base_hash,
            "quantized_for_training": cfg.quantize,
            "architectures": _architectures(base_dir),
        },
        "data": {
            # the files trained on (task data, then mixed-in general data), for n-gram overlap checks
            "train_path": str(Path(cfg.train).resolve()),
            "mix_path": str(Path(cfg.mix.file).resolve()) if cfg.mix else None,
            "train": data.sources["train"],
            "val": data.sources.get("val"),
            "mix": data.sources.get("mix"),
            "n_train": len(data.train),
            "n_task": data.n_task,
            "n_general": data.n_general,
            "n_val": len(data.val),
            "lengths": lengths,
            "identity": _data_identity(data),
            # Prompt hashes (as ``Sample.prompt_hash``) of every example trained on: the run stage warns
            # when a suite item is among them.
            "train_prompt_hashes": sorted({prompt_hash(c) for c in data.train}),
        },
        # the chat template the examples were formatted with: a run serving this candidate with another warns
        "chat_template_hash": template_text_hash(tok.chat_template),
        "config": cfg.identity(),
        "metrics": {
            "train_loss": [p.as_dict() for p in monitor.train_points],
            "val_loss": [p.as_dict() for p in monitor.val_points],
            "final_train_loss": final_train,
            "best_val_loss": monitor.best,
            "best_step": monitor.best_step,
            "restored_best_from_step": restored_from,
            "stopped_early": monitor.stopped_early,
            "overfitting": monitor.overfitting,
            "steps": steps,
            "epochs": round(epochs_done, 4),
            "quantized_layers": quantized_layers,
            "gradient_checkpointing": _use_checkpointing(cfg, device),
            "compute_dtype": resolve_dtype(cfg, device),
            "wall_time_s": round(wall, 2),
            # median optimizer step (forward + backward + update); the first step (warm-up) is left out
            "step_time_s": round(statistics.median(monitor.step_times[1:] or monitor.step_times), 4) if monitor.step_times else None,
        },
        "device": _device_description(device),
        "numerics": _numerics(),
        "evalkit_version": __version__,
        "git_commit": git_commit(Path(__file__).parent),
        "libraries": library_versions(),
        "warnings": notes,
    })
    write_candidate(out, candidate)
    del trainer, model, peft_model
    if device == "cuda":
        torch.cuda.empty_cache()
    return _result_from_candidate(out, candidate.model_dump(mode="json"), reused=False)


def _count_4bit_layers(model) -> int:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    return sum(1 for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))


def _architectures(base_dir: Path) -> list[str]:
    try:
        return list(json.loads((base_dir / "config.json").read_text(encoding="utf-8")).get("architectures") or [])
    except (OSError, json.JSONDecodeError):
        return []


def format_summary(result: TrainResult) -> str:
    """A few lines for the console after training."""
    c = result.candidate
    m = c.get("metrics", {})
    first = result.train_losses[0].loss if result.train_losses else None
    lines = [
        f"candidate {c.get('name')} -> {result.adapter_dir}" + (" (reused: nothing changed)" if result.reused else ""),
        f"  base {c['base']['path']} ({c['base']['quantized_for_training']}, {m.get('compute_dtype')} compute), "
        f"adapter r={c['adapter']['r']} alpha={c['adapter']['alpha']}",
        f"  {m.get('steps')} steps, {m.get('epochs')} epochs, {result.wall_time_s:.1f}s on {c.get('device')}",
    ]
    if first is not None and m.get("final_train_loss") is not None:
        lines.append(f"  train loss {first:.4f} -> {m['final_train_loss']:.4f}")
    if m.get("best_val_loss") is not None:
        lines.append(f"  best validation loss {m['best_val_loss']:.4f} at step {m.get('best_step')}")
    if result.stopped_early:
        lines.append("  stopped early (validation loss stopped improving)")
    if result.overfitting:
        lines.append("  WARNING: overfitting seen (train loss fell while validation loss rose)")
    lines.append(f"  manifest: {Path(result.adapter_dir) / CANDIDATE_FILE}")
    return "\n".join(lines)
