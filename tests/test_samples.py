"""Several samples per item (`generation: {samples: K}`) on the hf backend with evalkit's shipped tiny
base: K samples batched, every sample scored and kept, pass@k / pass^k / flaky / the noise floor in
summary.json, the pass_at_k and pass_all_k gates, a rerun that makes no call, and bad input refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit import stats
from evalkit.cli import main
from evalkit.demo_model import extraction_examples, shipped_base

BASE = shipped_base()  # committed with evalkit (evalkit/demo_assets/base): these tests need no download
assert BASE is not None, "evalkit/demo_assets/base is missing or from another recipe"


def write(tmp_path: Path, *, samples: int = 4, temperature: float = 1.0, gates: str = "", n: int = 10) -> Path:
    d = tmp_path / "suites" / "extract"
    d.mkdir(parents=True, exist_ok=True)
    (d / "suite.yaml").write_text("name: extract\nscorers:\n  - json_valid\n  - {max_chars: 60}\n")
    rows = [{"id": r["id"], "messages": r["messages"][:1], "reference": r["messages"][1]["content"]} for r in extraction_examples(n, seed=7)]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"models:\n  base: {{backend: hf, path: '{BASE}', dtype: float32, batch_size: 16}}\n"
        f"  cand: {{backend: hf, path: '{BASE}', dtype: float32, batch_size: 16, generation: {{max_new_tokens: 40, temperature: {temperature}, samples: {samples}, seed: 100}}}}\n"
        f"baseline: base\nsuites: [suites/extract]\nstore: store.db\ngeneration: {{max_new_tokens: 40, temperature: {temperature}, samples: {samples}}}\n"
        f"gates:\n{gates or '  - {name: fmt, metric: pass_rate, scorer: json_valid, min: 0.0}'}\n"
    )
    return cfg


def test_k_samples_are_generated_scored_kept_and_summarised(tmp_path, capsys):
    gates = ("  - {name: at4, metric: pass_at_k, k: 4, scorer: json_valid, min: 0.0}\n"
             "  - {name: all4, metric: pass_all_k, k: 4, scorer: json_valid, min: 0.0}\n"
             "  - {name: noreg, metric: regressions, scorer: json_valid, max: 10, noise: no_decision}\n"
             "  - {name: fmt, metric: pass_rate, scorer: json_valid, min: 0.0}\n"
             "  - {name: vs, metric: pass_rate, scorer: json_valid, vs: baseline, min: -1.0, significant: 0.05}")
    cfg = write(tmp_path, gates=gates)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o1"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert summary["calls"]["generations_made"] == 2 * 10 * 4  # two models x 10 items x 4 samples
    lines = [json.loads(x) for x in (tmp_path / "o1" / "items.jsonl").read_text().splitlines()]
    cand = [x for x in lines if x["model"] == "cand"]
    assert all(len(x["samples"]) == 4 and [s["index"] for s in x["samples"]] == [0, 1, 2, 3] for x in cand)
    assert all(set(s["scores"]) == {"json_valid", "max_chars"} for x in cand for s in x["samples"])  # every sample scored
    assert cand[0]["output"] == cand[0]["samples"][0]["output"]
    assert any(len({s["output"] for s in x["samples"]}) > 1 for x in cand)  # sampled: the samples differ
    # the figures, from the items themselves
    counts = [sum(bool(s["scores"]["json_valid"]["passed"]) for s in x["samples"]) for x in cand]
    [row] = [m for m in summary["metrics"] if m["model"] == "cand" and m["scorer"] == "json_valid"]
    assert row["samples"] == 4 and row["n"] == 10
    assert row["value"] == pytest.approx(sum(counts) / 40)
    assert row["pass_at"]["1"] == pytest.approx(sum(counts) / 40)
    assert row["pass_at"]["4"] == pytest.approx(sum(stats.pass_at_k(4, c, 4) for c in counts) / 10)
    assert row["pass_all"]["4"] == pytest.approx(sum(stats.pass_all_k(4, c, 4) for c in counts) / 10)
    assert row["flaky"] == sum(1 for c in counts if 0 < c < 4) and len(row["flaky_items"]) == row["flaky"]
    assert row["expected_flips"] == pytest.approx(sum(stats.flip_probability(4, c) for c in counts), abs=1e-4)
    assert row["pass_all"]["4"] <= row["pass_at"]["1"] <= row["pass_at"]["4"]
    gates_by = {g["name"]: g for g in summary["gates"]}
    assert gates_by["at4"]["observed"] == pytest.approx(row["pass_at"]["4"])
    assert gates_by["all4"]["observed"] == pytest.approx(row["pass_all"]["4"])
    assert gates_by["fmt"]["observed"] == pytest.approx(row["value"])
    assert "noise floor" in gates_by["noreg"]["detail"]
    base_counts = {x["sample_id"]: sum(bool(s["scores"]["json_valid"]["passed"]) for s in x["samples"]) for x in lines if x["model"] == "base"}
    fracs = [(c - base_counts[x["sample_id"]]) / 4 for x, c in zip(cand, counts)]
    assert gates_by["vs"]["observed"] == pytest.approx(sum(fracs) / 10)
    assert "per-item pass fractions" in gates_by["vs"]["detail"] and "Wilcoxon signed-rank" in gates_by["vs"]["detail"]
    assert gates_by["vs"]["test"] == "wilcoxon_pass_fractions" and 0 <= gates_by["vs"]["p_value"] <= 1
    floor = sum(stats.flip_probability(4, c) for c in base_counts.values())
    assert f"noise floor is {floor:.4g}" in gates_by["noreg"]["detail"]
    # a rerun makes no call: every sample is cached under its own key
    assert main(["run", str(cfg), "--out", str(tmp_path / "o2"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert again["calls"]["generations_made"] == 0 and again["calls"]["generations_cached"] == 80
    assert [m for m in again["metrics"] if m["model"] == "cand"] == [m for m in summary["metrics"] if m["model"] == "cand"]
    # the store keeps every sample: `evalkit report` rebuilds items.jsonl byte for byte
    assert main(["report", "latest", "--out", str(tmp_path / "r"), "--store", str(tmp_path / "store.db")]) == 0
    assert (tmp_path / "r" / "items.jsonl").read_bytes() == (tmp_path / "o2" / "items.jsonl").read_bytes()


def test_one_sample_keeps_the_old_cache_keys(tmp_path):
    """samples: 1 (the default) generates exactly what it did before: sample 0 is the spec itself."""
    from evalkit.run import draw_spec
    from evalkit.types import GenerationParams, ModelSpec

    spec = ModelSpec(name="m", backend="hf", path="/p", generation=GenerationParams(temperature=0.7, seed=3), samples=4)
    assert draw_spec(spec, 0) is spec
    assert draw_spec(spec, 2).generation.seed == 5 and draw_spec(spec, 2).model_id != spec.model_id
    assert spec.model_id == ModelSpec(name="m", backend="hf", path="/p", generation=GenerationParams(temperature=0.7, seed=3)).model_id


@pytest.mark.parametrize("change,expect", [
    ({"samples": 0}, "samples"),
    ({"gates": "  - {name: at8, metric: pass_at_k, k: 8, scorer: json_valid, min: 0.5}"}, "k 8 is more than the 4 samples"),
    ({"gates": "  - {name: atk, metric: pass_at_k, scorer: json_valid, min: 0.5}"}, "needs 'k'"),
    ({"gates": "  - {name: k, metric: pass_rate, k: 2, scorer: json_valid, min: 0.5}"}, "'k' applies to pass_at_k"),
])
def test_bad_sampling_input_is_one_line_and_nothing_runs(tmp_path, capsys, change, expect):
    cfg = write(tmp_path, **{k: v for k, v in change.items() if k != "gates"}, gates=change.get("gates", ""))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "o").exists() and not (tmp_path / "store.db").exists()


def test_greedy_samples_warn(tmp_path):
    cfg = write(tmp_path, samples=2, temperature=0.0, n=2)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert any("samples per item at temperature 0" in w for w in summary["warnings"])


def test_the_reports_show_the_samples_table(tmp_path):
    cfg = write(tmp_path, n=4)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    html = (tmp_path / "o" / "report.html").read_text()
    md = (tmp_path / "o" / "report.md").read_text()
    assert 'id="samples"' in html and "expected flips</th>" in html
    assert "| suite | model | scorer | samples | pass@1 | pass@k | pass^k | flaky | expected flips |" in md


def test_truncation_is_recorded_summarised_and_gated(tmp_path):
    """A token limit too small for the answer: every generation ends with finish_reason length, items.jsonl
    and summary.json say so, the report shows it, and a truncation_rate gate fails naming the items.
    """
    cfg = write(tmp_path, samples=1, temperature=0.0, n=4,
                gates="  - {name: cut, metric: truncation_rate, max: 0.1}")
    cfg.write_text(cfg.read_text().replace("max_new_tokens: 40", "max_new_tokens: 1"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    lines = [json.loads(x) for x in (tmp_path / "o" / "items.jsonl").read_text().splitlines()]
    assert lines and all(x["finish_reason"] == "length" and x["truncated"] for x in lines)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    rows = {(t["model"], t["suite"]): t for t in summary["truncation"]}
    assert rows[("cand", "extract")] == {"model": "cand", "suite": "extract", "n": 4, "truncated": 4, "rate": 1.0}
    [g] = summary["gates"]
    assert g["outcome"] == "fail" and g["observed"] == 1.0 and len(g["failing_items"]) == 4 and "cut by the token limit" in g["detail"]
    assert 'id="truncation"' in (tmp_path / "o" / "report.html").read_text()
    assert "cut by the token limit: " in (tmp_path / "o" / "report.md").read_text()
    # and with room to finish, nothing is cut
    cfg.write_text(cfg.read_text().replace("max_new_tokens: 1", "max_new_tokens: 60"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o2"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert again["gates"][0]["outcome"] == "pass"
