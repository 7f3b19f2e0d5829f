"""eval.yaml / suite.yaml: unknown keys and bad values are one line naming file and line."""

from pathlib import Path

import pytest

from evalkit.config import load_eval_config
from evalkit.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "eval.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """\
models:
  base: {backend: hf, path: ./base}
  cand: {backend: hf, path: ./base, adapter: ./adapter}
  api:  {backend: openai, model: ft:gpt-4o-mini:org::abc, base_url: http://127.0.0.1:9/v1, api_key_env: OPENAI_API_KEY}
baseline: base
candidates: [cand, api]
suites: [suites/demo]
generation: {max_new_tokens: 64, temperature: 0}
gates:
  - {name: format, metric: pass_rate, scorer: json_schema, min: 0.95}
  - {name: no-regressions, metric: regressions, vs: baseline, max: 0}
"""


def test_contract_example_loads(tmp_path):
    cfg = load_eval_config(write(tmp_path, GOOD))
    assert cfg.baseline == "base"
    assert cfg.candidate_names() == ["cand", "api"]
    assert cfg.generation.max_new_tokens == 64
    assert cfg.gates[1].max == 0 and cfg.gates[1].vs == "baseline"


def test_candidates_default_to_every_model_but_the_baseline(tmp_path):
    cfg = load_eval_config(write(tmp_path, GOOD.replace("candidates: [cand, api]\n", "")))
    assert cfg.candidate_names() == ["cand", "api"]


@pytest.mark.parametrize(
    "old,new,line,fragment",
    [
        ("generation: {max_new_tokens: 64, temperature: 0}", "generation: {max_new_tokens: 64, temprature: 0}", 8, "unknown key 'temprature'"),
        ("  - {name: format, metric: pass_rate, scorer: json_schema, min: 0.95}", "  - {name: format, metric: pass_rat, scorer: json_schema, min: 0.95}", 10, "gates.0.metric"),
        ("baseline: base", "baseline: nope", None, "baseline 'nope' is not one of models"),
        ("  base: {backend: hf, path: ./base}", "  base: {backend: hf}", 2, "needs 'path'"),
        ("suites: [suites/demo]\n", "", None, "suites: required key is missing"),
    ],
)
def test_bad_config_names_file_and_line(tmp_path, old, new, line, fragment):
    p = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as ei:
        load_eval_config(p)
    msg = ei.value.one_line()
    assert fragment in msg
    assert "\n" not in msg
    assert msg.startswith(str(p))
    if line is not None:
        assert msg.startswith(f"{p}:{line}:"), msg


def test_invalid_yaml_has_line(tmp_path):
    p = write(tmp_path, "models:\n  base: {backend: hf, path: x\nsuites: []\n")
    with pytest.raises(ConfigError) as ei:
        load_eval_config(p)
    assert ei.value.line is not None and "invalid YAML" in ei.value.message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_eval_config(tmp_path / "nope.yaml")
    assert "file not found" in ei.value.one_line()


def test_threshold_zero_is_kept(tmp_path):
    cfg = load_eval_config(write(tmp_path, GOOD.replace("min: 0.95", "min: 0")))
    assert cfg.gates[0].min == 0.0
