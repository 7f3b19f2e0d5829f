"""Real QLoRA on a tiny base, on the CPU: 4-bit layers, falling loss, a loadable vLLM-shaped adapter,
candidate.json, merging, early stopping with the overfitting warning, and plain LoRA.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.train import TrainConfig, load_candidate, merge, train

from .conftest import extraction, general, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qlora_run(train_base, tmp_path_factory):
    """One QLoRA run through the CLI (train.yaml with data mixing), shared by the tests below."""
    root = tmp_path_factory.mktemp("qlora")
    write_jsonl(root / "data" / "train.jsonl", extraction(48, seed=11))
    write_jsonl(root / "data" / "val.jsonl", extraction(8, seed=12))
    write_jsonl(root / "data" / "general.jsonl", general(40, seed=13))
    (root / "train.yaml").write_text(
        f"base: {train_base}\n"
        "train: data/train.jsonl\n"
        "val: data/val.jsonl\n"
        "mix: {file: data/general.jsonl, fraction: 0.25}\n"
        "quantize: nf4\n"
        "dtype: bfloat16\n"
        "lora: {r: 8, alpha: 16, dropout: 0.0}\n"
        "lr: 1.0e-2\n"
        "epochs: 3\n"
        "batch_size: 8\n"
        "max_seq_len: 160\n"
        "log_every: 2\n"
        "seed: 5\n"
    )
    out = root / "cand"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", str(root / "train.yaml"), "--out", str(out)])
    assert code == 0, err.getvalue()[-3000:]
    return {"root": root, "out": out, "stderr": err.getvalue(), "base": train_base}


def test_qlora_trains_4bit_layers_and_loss_falls(qlora_run):
    cand = load_candidate(qlora_run["out"])
    m = cand["metrics"]
    assert m["quantized_layers"] > 0  # bitsandbytes Linear4bit layers were trained through
    assert cand["base"]["quantized_for_training"] == "nf4" and m["compute_dtype"] == "bfloat16"
    losses = [p["loss"] for p in m["train_loss"]]
    assert len(losses) >= 5
    assert losses[-1] < losses[0] - 0.15, losses  # tiny_base (recipe 2, 440 tokens): about 2.99 -> 2.76
    assert m["val_loss"][-1]["loss"] < m["val_loss"][0]["loss"] or m["best_val_loss"] < m["val_loss"][0]["loss"]
    assert m["steps"] == 3 * 8  # 64 examples (48 task + 16 general) / batch 8, 3 epochs


def test_linear4bit_layers_in_the_loaded_base(train_base):
    import bitsandbytes as bnb
    import torch

    from evalkit.train.trainer import load_base_for_training

    cfg = TrainConfig(base=str(train_base), train="unused.jsonl", dtype="bfloat16")
    model = load_base_for_training(cfg, "cpu")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 7 * model.config.num_hidden_layers  # q k v o gate up down
    w = layers[0].weight
    assert w.quant_state.quant_type == "nf4" and w.quant_state.nested  # double quantisation
    assert layers[0].compute_dtype == torch.bfloat16


def test_progress_bar_and_loss_table_on_stderr(qlora_run):
    err = qlora_run["stderr"]
    assert "step  epoch train_loss   val_loss" in err
    assert "train:" in err and "step" in err  # the tqdm bar
    assert "best" in err


def test_adapter_is_vllm_shaped(qlora_run):
    conf = json.loads((qlora_run["out"] / "adapter_config.json").read_text())
    assert conf["r"] == 8 and conf["lora_alpha"] == 16
    assert not conf.get("modules_to_save")
    assert not conf.get("use_dora")
    assert (qlora_run["out"] / "adapter_model.safetensors").is_file()
    kinds = set(load_candidate(qlora_run["out"])["adapter"]["target_modules"])
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= kinds  # all-linear
    assert "lm_head" not in kinds


def test_manifest_contents(qlora_run):
    from evalkit.train.data import file_sha256

    root, out = qlora_run["root"], qlora_run["out"]
    cand = load_candidate(out)
    assert cand["kind"] == "evalkit.candidate"
    assert cand["base"]["path"] == str(Path(qlora_run["base"]).resolve())
    assert len(cand["base"]["hash"]) == 16
    assert cand["data"]["train"]["sha256"] == file_sha256(root / "data" / "train.jsonl")
    assert cand["data"]["val"]["sha256"] == file_sha256(root / "data" / "val.jsonl")
    assert cand["data"]["mix"]["sha256"] == file_sha256(root / "data" / "general.jsonl")
    assert (cand["data"]["n_task"], cand["data"]["n_general"], cand["data"]["n_val"]) == (48, 16, 8)
    assert len(cand["data"]["train_prompt_hashes"]) >= 50
    c = cand["config"]
    assert c["lr"] == 1e-2 and c["lora"]["r"] == 8 and c["mix"]["fraction"] == 0.25 and c["seed"] == 5
    assert c["epochs"] == 3 and c["batch_size"] == 8 and c["max_seq_len"] == 160
    assert cand["device"].startswith("cpu")
    assert cand["evalkit_version"]
    assert "git_commit" in cand  # None outside a git checkout
    assert cand["metrics"]["wall_time_s"] > 0
    assert {"torch", "transformers", "peft", "trl", "bitsandbytes"} <= set(cand["libraries"])
    assert cand["adapter"]["vllm_compatible"] is True
    # what the run stage reads: the files trained on, and a slim record for summaries
    assert cand["data"]["train_path"] == str((root / "data" / "train.jsonl").resolve())
    assert cand["data"]["mix_path"] == str((root / "data" / "general.jsonl").resolve())
    from evalkit.train import candidate_record

    rec = candidate_record(cand)
    assert "train_prompt_hashes" not in rec["data"] and rec["data"]["train_prompt_hashes_count"] == len(cand["data"]["train_prompt_hashes"])
    assert rec["metrics"]["train_loss"] == cand["metrics"]["train_loss"]


def test_adapter_loads_with_the_hf_backend(qlora_run):
    """The run stage's hf backend loads the adapter on its base and generates."""
    from evalkit.types import GenerationParams, Message, ModelSpec

    pytest.importorskip("evalkit.models.hf", reason="the hf backend is not in this tree yet")
    from evalkit.models import GenerationRequest, open_backend

    spec = ModelSpec(
        name="cand", backend="hf", path=str(qlora_run["base"]), adapter=str(qlora_run["out"]),
        generation=GenerationParams(max_new_tokens=16),
    )
    backend = open_backend([spec])
    try:
        prompt = tuple(Message(**m) for m in extraction(1, seed=99)[0]["messages"][:1])
        out = backend.generate([GenerationRequest(key="k1", model=spec, messages=prompt)])
    finally:
        backend.close()
    assert out and out[0].error is None and out[0].text


def test_merge_agrees_with_the_adapter(qlora_run, capsys):
    merged = qlora_run["root"] / "merged"
    code = main(["merge", str(qlora_run["out"]), "--out", str(merged), "--check", "3", "--max-new-tokens", "24"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3/3 prompts identical" in out and "outputs agree" in out
    assert (merged / "config.json").is_file() and (merged / "tokenizer_config.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    cand = load_candidate(merged)
    assert cand["merged"]["identical"] == 3 and cand["merged"]["token_agreement"] == 1.0
    # the check means something: the adapter really changes what the base says
    assert cand["merged"]["adapter_changes_output"] >= 1
    # merged weights are plain (never 4-bit)
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())


def test_merge_api_and_refusal_to_overwrite(qlora_run, tmp_path):
    r = merge(qlora_run["out"], tmp_path / "m", check_prompts=2, max_new_tokens=8, progress=False)
    assert r.agree and r.prompts_checked == 2 and r.token_agreement == 1.0
    from evalkit.errors import UserError

    with pytest.raises(UserError, match="already holds a checkpoint"):
        merge(qlora_run["out"], tmp_path / "m", check_prompts=0, progress=False)


def test_rerun_with_reuse_trains_nothing_and_cli_refuses_to_overwrite(qlora_run, capsys):
    cfg_path = qlora_run["root"] / "train.yaml"
    r = train(cfg_path, qlora_run["out"], reuse=True, progress=False)
    assert r.reused and r.steps == 24
    assert main(["train", str(cfg_path), "--out", str(qlora_run["out"])]) == 2
    assert "already holds an adapter" in capsys.readouterr().err


def test_early_stop_and_overfitting_warning_with_plain_lora(train_base, tmp_path):
    """Train on one task, validate on an unrelated one with a high learning rate: validation loss
    rises while train loss falls; training stops after `patience` evaluations and says why.
    """
    t = write_jsonl(tmp_path / "t.jsonl", extraction(64, seed=21))
    v = write_jsonl(tmp_path / "v.jsonl", general(6, seed=22))
    cfg = TrainConfig(
        base=str(train_base), train=str(t), val=str(v), quantize="none",
        lora={"r": 8, "alpha": 32, "dropout": 0.0}, lr=1e-2, scheduler="constant", warmup_ratio=0.0,
        max_steps=60, batch_size=8, max_seq_len=160, eval_every=4, log_every=1, patience=2, seed=3,
    )
    warnings: list[str] = []
    r = train(cfg, tmp_path / "cand", progress=False, warn=warnings.append)
    assert r.stopped_early and r.steps < 60
    assert r.overfitting
    assert any(w.startswith("overfitting: train loss fell") for w in warnings), warnings
    assert any("stopped early" in w for w in warnings)
    cand = r.candidate
    assert cand["metrics"]["quantized_layers"] == 0 and cand["base"]["quantized_for_training"] == "none"
    val = [p["loss"] for p in cand["metrics"]["val_loss"]]
    assert val[-1] > min(val)
    # the best adapter was kept, not the last one
    assert cand["metrics"]["restored_best_from_step"] == cand["metrics"]["best_step"] < r.steps
