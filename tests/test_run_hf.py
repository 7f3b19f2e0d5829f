"""`evalkit run` on the hf backend with a real tiny model: one loaded base serving several adapters,
the adapter-applied check, and a cached rerun that loads no model.
"""

import json
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.support.models import make_tiny_adapter


def write_suite(root: Path) -> Path:
    d = root / "suites" / "tiny"
    d.mkdir(parents=True)
    (d / "suite.yaml").write_text("name: tiny\nkind: regression\nscorers:\n  - {max_chars: 400}\n  - {exact_match: {normalize: whitespace}}\n")
    lines = [
        {"id": f"q{i}", "messages": [{"role": "user", "content": p}], "reference": r, "tags": ["general"]}
        for i, (p, r) in enumerate([("Uppercase: cat", "CAT"), ("Reverse: abc", "cba"), ("Add 2 and 3", "5"), ("Echo: sun", "sun")])
    ]
    (d / "samples.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return d


@pytest.fixture(scope="module")
def noop_adapter(tiny_base, tmp_path_factory):
    """An adapter whose lora_B is zero: loads fine, changes nothing (the silent failure users hit)."""
    return make_tiny_adapter(tiny_base, tmp_path_factory.mktemp("noop") / "noop", seed=3, std=0.0)


def test_hf_run_several_adapters_one_base(tmp_path, tiny_base, tiny_adapters, noop_adapter, monkeypatch):
    import shutil

    from evalkit.data.suites import load_suite

    monkeypatch.chdir(tmp_path)
    suite = load_suite(write_suite(tmp_path))
    # adapter a as `evalkit train` leaves it: with a candidate.json whose training data held item q1
    a_dir = shutil.copytree(tiny_adapters["a"], tmp_path / "cand-a")
    q1 = next(s for s in suite.samples if s.id == "q1")
    (a_dir / "candidate.json").write_text(json.dumps({
        "kind": "evalkit.candidate", "base": {"path": str(tiny_base)}, "config": {"lr": 0.001},
        "data": {"train": {"sha256": "f" * 64}, "train_prompt_hashes": [q1.prompt_hash(), "0" * 16]},
    }))
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "models:\n"
        f"  base: {{backend: hf, path: '{tiny_base}', batch_size: 4}}\n"
        f"  a: {{backend: hf, path: '{tiny_base}', adapter: '{a_dir}'}}\n"
        f"  b: {{backend: hf, path: '{tiny_base}', adapter: '{tiny_adapters['b']}'}}\n"
        f"  noop: {{backend: hf, path: '{tiny_base}', adapter: '{noop_adapter}'}}\n"
        "baseline: base\nsuites: [suites/tiny]\ngeneration: {max_new_tokens: 12}\n"
        "gates:\n  - {name: adapter-applied, metric: adapter_applied}\n"
    )
    assert main(["run", str(cfg), "--out", "o1", "--no-progress"]) == 1
    summary = json.loads(Path("o1/summary.json").read_text())
    gates = {g["model"]: g for g in summary["gates"]}
    assert gates["a"]["passed"] and gates["b"]["passed"]
    assert gates["noop"]["passed"] is False
    assert any("noop" in w and "no effect" in w for w in summary["warnings"])
    outs = {}
    for line in Path("o1/items.jsonl").read_text().splitlines():
        it = json.loads(line)
        outs.setdefault(it["model"], []).append(it["output"])
    assert outs["a"] != outs["base"] and outs["b"] != outs["base"] and outs["a"] != outs["b"]
    assert outs["noop"] == outs["base"]
    # the candidate's provenance is recorded (without the bulky hashes), and the overlap named
    rec = summary["models"]["a"]["candidate"]
    assert rec["config"] == {"lr": 0.001} and rec["data"]["train_prompt_hashes_count"] == 2
    assert "train_prompt_hashes" not in rec["data"] and summary["models"]["b"]["candidate"] is None
    [overlap] = [w for w in summary["warnings"] if "training data" in w]
    assert "model 'a': 1 item(s) of suite 'tiny'" in overlap and overlap.endswith(": q1")
    assert summary["calls"]["generations_made"] == 16
    # identities differ per adapter, so their caches never mix
    ids = {m: summary["models"][m]["model_id"] for m in ("base", "a", "b", "noop")}
    assert len(set(ids.values())) == 4

    # unchanged rerun: no model is even loaded (the hf factory would be called otherwise)
    import evalkit.models as models
    from evalkit.models import registry

    def refuse(specs):
        raise AssertionError("a backend was opened on an unchanged rerun")

    import dataclasses

    monkeypatch.setitem(registry._REGISTRY, "hf", dataclasses.replace(models.backend_info("hf"), factory=refuse))
    assert main(["run", str(cfg), "--out", "o2", "--no-progress"]) == 1
    s2 = json.loads(Path("o2/summary.json").read_text())
    assert s2["calls"]["generations_made"] == 0 and s2["calls"]["generations_cached"] == 16
