"""Training stage: QLoRA / LoRA adapters with TRL, merging, and the candidate.json manifest.

Offers ``TrainConfig`` / ``load_train_config`` (train.yaml), ``train(config, out_dir) -> TrainResult``,
``merge(adapter_dir, out_dir) -> MergeResult``, ``load_candidate(dir)`` and
``items_in_training_data(candidate, samples)`` for the run stage. Heavy libraries load only inside
``train`` and ``merge``.
"""

from .config import VLLM_LORA_RANKS, LoraSettings, MixSettings, TrainConfig, load_train_config
from .data import TrainingData, general_count, prepare_data, read_conversations
from .manifest import CANDIDATE_FILE, candidate_record, items_in_training_data, load_candidate
from .merge import MergeResult, merge
from .trainer import LossPoint, TrainResult, check_adapter_for_vllm, format_summary, train

__all__ = [
    "CANDIDATE_FILE",
    "VLLM_LORA_RANKS",
    "LoraSettings",
    "LossPoint",
    "MergeResult",
    "MixSettings",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "candidate_record",
    "check_adapter_for_vllm",
    "format_summary",
    "general_count",
    "items_in_training_data",
    "load_candidate",
    "load_train_config",
    "merge",
    "prepare_data",
    "read_conversations",
    "train",
]
