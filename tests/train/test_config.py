"""train.yaml validation and CLI errors: one line, exit 2, file:line or key named. No model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.errors import ConfigError
from evalkit.train import TrainConfig, load_train_config

from .conftest import extraction, write_jsonl


@pytest.fixture
def fake_base(tmp_path: Path) -> Path:
    """A directory that passes the base check; the tests here fail before any weights are read."""
    d = tmp_path / "base"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return d


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "train.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_unknown_key_names_file_and_line(tmp_path, capsys, fake_base):
    cfg = _yaml(tmp_path, "base: base\ntrain: t.jsonl\nlearning_rate: 0.001\n")
    assert main(["train", str(cfg)]) == 2
    line = _one_error_line(capsys)
    assert f"{cfg}:3: unknown key 'learning_rate'" in line


def test_unknown_nested_key(tmp_path, capsys):
    cfg = _yaml(tmp_path, "base: base\ntrain: t.jsonl\nlora:\n  r: 16\n  rank: 8\n")
    assert main(["train", str(cfg)]) == 2
    assert f"{cfg}:5: unknown key 'rank' in lora" in _one_error_line(capsys)


def test_rank_vllm_cannot_serve_is_refused(tmp_path, capsys):
    cfg = _yaml(tmp_path, "base: base\ntrain: t.jsonl\nlora: {r: 12}\n")
    assert main(["train", str(cfg)]) == 2
    line = _one_error_line(capsys)
    assert f"{cfg}:3:" in line and "r=12" in line and "vLLM" in line


@pytest.mark.parametrize(
    "text, needle",
    [
        ("base: b\ntrain: t.jsonl\nquantize: int8\n", ":3: quantize"),
        ("base: b\ntrain: t.jsonl\nmix: {file: g.jsonl, fraction: 1.5}\n", ":3: mix.fraction"),
        ("base: b\ntrain: t.jsonl\nmix: {fraction: 0.2}\n", "mix.file: required key is missing"),
        ("base: b\ntrain: t.jsonl\neval_every: 0\n", ":3: eval_every"),
        ("base: b\ntrain: t.jsonl\nval: v.jsonl\nval_fraction: 0.2\n", "either 'val'"),
        ("train: t.jsonl\n", "base: required key is missing"),
        ("base: b\ntrain: t.jsonl\nlr: -1\n", ":3: lr"),
        ("base: b\ntrain: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_configs_exit_2_with_one_line(tmp_path, capsys, text, needle):
    cfg = _yaml(tmp_path, text)
    assert main(["train", str(cfg)]) == 2
    assert needle in _one_error_line(capsys)


def test_missing_base_dir(tmp_path, capsys):
    write_jsonl(tmp_path / "t.jsonl", extraction(4, seed=1))
    cfg = _yaml(tmp_path, "base: nowhere\ntrain: t.jsonl\n")
    assert main(["train", str(cfg)]) == 2
    assert "base: checkpoint directory not found" in _one_error_line(capsys)


def test_training_line_without_assistant_turn_names_file_and_line(tmp_path, capsys, fake_base):
    rows = extraction(3, seed=1)
    rows[1] = {"messages": rows[1]["messages"][:1]}  # the answer is missing
    data = write_jsonl(tmp_path / "t.jsonl", rows)
    cfg = _yaml(tmp_path, "base: base\ntrain: t.jsonl\n")
    assert main(["train", str(cfg)]) == 2
    line = _one_error_line(capsys)
    assert f"{data}:2:" in line and "must end with an assistant turn" in line


def test_bad_json_in_mix_file_names_file_and_line(tmp_path, capsys, fake_base):
    write_jsonl(tmp_path / "t.jsonl", extraction(10, seed=1))
    (tmp_path / "g.jsonl").write_text('{"messages": []}\n{not json\n')
    cfg = _yaml(tmp_path, "base: base\ntrain: t.jsonl\nmix: {file: g.jsonl, fraction: 0.2}\n")
    assert main(["train", str(cfg)]) == 2
    assert f"{tmp_path / 'g.jsonl'}:1:" in _one_error_line(capsys)


def test_cli_override_is_validated(tmp_path, capsys):
    cfg = _yaml(tmp_path, "base: b\ntrain: t.jsonl\n")
    assert main(["train", str(cfg), "--quantize", "fp8"]) == 2
    assert "quantize" in _one_error_line(capsys)


def test_defaults_are_adapter_defaults():
    cfg = TrainConfig(base="b", train="t.jsonl")
    assert cfg.lr == 2e-4  # not TRL's full fine-tuning default 2e-5
    assert cfg.quantize == "nf4" and cfg.lora.target_modules == "all-linear"
    assert cfg.held_out_fraction == 0.1
    assert TrainConfig(base="b", train="t.jsonl", val="v.jsonl").held_out_fraction == 0.0
    # the default name carries the data, the method and a config hash
    assert cfg.candidate_name().startswith("t-qlora-r16-")
    assert cfg.candidate_name() != TrainConfig(base="b", train="t.jsonl", lr=1e-4).candidate_name()


def test_relative_paths_resolve_beside_the_yaml(tmp_path):
    sub = tmp_path / "cfg"
    sub.mkdir()
    p = sub / "train.yaml"
    p.write_text("base: ../models/base\ntrain: data/t.jsonl\nmix: {file: /abs/g.jsonl, fraction: 0.1}\n")
    cfg = load_train_config(p)
    assert Path(cfg.base) == sub.resolve() / "../models/base"
    assert Path(cfg.train) == sub.resolve() / "data/t.jsonl"
    assert cfg.mix is not None and cfg.mix.file == "/abs/g.jsonl"


def test_load_train_config_error_is_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_train_config(_yaml(tmp_path, "base: b\ntrain: t\nepochs: 0\n"))
    assert e.value.line == 3


@pytest.mark.parametrize("cmd", [["train", "--help"], ["merge", "--help"]])
def test_help(cmd, capsys):
    assert main(cmd) == 0
    out = capsys.readouterr().out
    assert "Example:" in out


def test_merge_refuses_a_directory_without_adapter(tmp_path, capsys):
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "no adapter_config.json" in _one_error_line(capsys)


def test_merge_refuses_a_quantized_base(tmp_path, capsys):
    base = tmp_path / "base4"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"quantization_config": {"load_in_4bit": True}}))
    ad = tmp_path / "ad"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 8}))
    assert main(["merge", str(ad), "--out", str(tmp_path / "m")]) == 2
    assert "quantized" in _one_error_line(capsys)


@pytest.mark.slow  # needs the tiny base's tokenizer (no training)
def test_max_seq_len_that_leaves_nothing_to_learn_is_refused(tmp_path, capsys, train_base):
    """Every assistant turn cut away: one line naming max_seq_len (TRL would drop every example)."""
    write_jsonl(tmp_path / "t.jsonl", extraction(6, seed=1))
    cfg = _yaml(tmp_path, f"base: {train_base}\ntrain: t.jsonl\nval_fraction: 0\nmax_seq_len: 8\n")
    assert main(["train", str(cfg), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "max_seq_len" in line and "every training example" in line
