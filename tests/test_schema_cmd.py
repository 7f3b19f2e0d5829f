"""`evalkit schema eval|train`: a Draft 2020-12 JSON Schema generated from the config models."""

import json
from pathlib import Path

import jsonschema
import yaml

from evalkit.cli import main
from evalkit.demo import demo_eval_config

REPRO_TRAIN = {"base": "base", "train": "train.jsonl", "val": "val.jsonl", "quantize": "nf4", "dtype": "float32",
               "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
               "lr": 4.0e-3, "max_steps": 20, "batch_size": 16, "eval_every": 100, "seed": 42}


def schema(kind: str, capsys) -> dict:
    assert main(["schema", kind]) == 0
    out = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(out)
    assert out["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    return out


def test_the_demo_eval_yaml_validates_and_a_misspelt_key_does_not(capsys, tmp_path):
    validator = jsonschema.Draft202012Validator(schema("eval", capsys))
    conf = demo_eval_config(Path("/base"), {"narrow": Path("/a"), "mixed": Path("/b")}, [Path("/s1"), Path("/s2")], Path("/store.db"))
    conf = yaml.safe_load(yaml.safe_dump(conf))  # as the file on disk reads
    assert list(validator.iter_errors(conf)) == []
    conf["gates"][1]["mni"] = 0.5
    conf["generation"]["temprature"] = 0
    errors = sorted(e.message for e in validator.iter_errors(conf))
    assert len(errors) == 2 and all("Additional properties are not allowed" in e for e in errors)
    assert "'mni' was unexpected" in errors[0] + errors[1] and "'temprature' was unexpected" in errors[0] + errors[1]


def test_train_schema_accepts_a_train_yaml_and_refuses_a_wrong_type(capsys):
    validator = jsonschema.Draft202012Validator(schema("train", capsys))
    assert list(validator.iter_errors(REPRO_TRAIN)) == []
    assert list(validator.iter_errors({**REPRO_TRAIN, "quantize": "int3"}))


def test_an_unknown_schema_is_one_line_exit_2(capsys):
    assert main(["schema", "suite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no schema 'suite': choose one of eval, train" in err
