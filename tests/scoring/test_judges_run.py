"""Judges inside `evalkit run`: eval.yaml judges -> metrics judge.*, win_rate gate, errors.judge, cached rerun.

The models under test and the judge are all served by the loopback server through the real SDKs.
"""

from __future__ import annotations

import json

import pytest

from evalkit.cli import main
from tests.support.loopback import Fault, last_user_text, requested_schema
from tests.test_run import extractor, make_suite, write_eval


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("EK_TEST_KEY", "sk-evalkit-test-SECRET-1234")
    from evalkit.models import structured as judge_client

    monkeypatch.setattr(judge_client, "BACKOFF_BASE_S", 0.02)


def model_and_judge(broken_ids=()):
    """Models answer the extraction task; the judge gives 5 to JSON outputs and 2 to prose, and in
    pairwise mode prefers the JSON answer (so the candidate loses where it broke the format).
    """
    gen = extractor(broken_ids)

    def respond(api, req):
        schema = requested_schema(api, req)
        if schema is None:
            return gen(api, req)
        text = last_user_text(req)
        if "winner" in schema.get("properties", {}):
            a = text.split("<answer_a>\n", 1)[1].split("\n</answer_a>", 1)[0]
            b = text.split("<answer_b>\n", 1)[1].split("\n</answer_b>", 1)[0]
            ja, jb = a.startswith("{"), b.startswith("{")
            return {"winner": "tie" if ja == jb else ("A" if ja else "B"), "reason": "format"}
        out = text.split("<output>\n", 1)[1].split("\n</output>", 1)[0]
        s = 5 if out.startswith("{") else 2
        return {"correctness": s, "format": s, "completeness": 5, "notes": "ok" if s == 5 else "not JSON"}

    return respond


JUDGES = (
    "judges:\n"
    "  - rubric: default\n"
    "    model: {{backend: openai, model: judge, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
    "  - rubric: pairwise\n"
    "    model: {{backend: openai, model: judge, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
)


def test_run_with_judges_metrics_gates_errors_and_cache(tmp_path, loopback_api):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    loopback_api.set_responder(model_and_judge(broken_ids={1, 4}))
    make_suite(tmp_path)
    gates = (
        "  - {name: quality, metric: mean, scorer: judge.correctness, min: 4.0}\n"
        "  - {name: beats-base, metric: win_rate, judge: pairwise, vs: base, min: 0.5}\n"
    )
    # the judgment of cand's s1 gets prose 3 times (1 + 2 verdict retries): a judge error, excluded from the mean
    loopback_api.add_faults([Fault.content("I would say 4/5", times=3, when=lambda r: "<output>\\nP1 is 21\\n</output>" in json.dumps(r.body))])
    cfg = write_eval(tmp_path, loopback_api.base_url, gates, extra=JUDGES.format(root=root, url=loopback_api.base_url))
    out = tmp_path / "out"
    code = main(["run", str(cfg), "--out", str(out), "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    m = {(x["model"], x["scorer"]): x for x in summary["metrics"]}
    assert ("cand", "judge.correctness") in m and ("base", "judge.format") in m
    assert summary["errors"]["judge"] == 1
    assert m[("cand", "judge.correctness")]["errors"] == 1 and m[("base", "judge.correctness")]["errors"] == 0
    assert m[("base", "judge.correctness")]["value"] == 5.0
    assert m[("cand", "judge.correctness")]["value"] == pytest.approx((4 * 5 + 2) / 5)  # s1 excluded, s4 = 2
    items = [json.loads(l) for l in (out / "items.jsonl").read_text().splitlines()]
    cand = {i["sample_id"]: i for i in items if i["model"] == "cand"}
    assert cand["s1"]["scores"]["judge.correctness"]["value"] is None and "invalid verdict" in cand["s1"]["scores"]["judge.correctness"]["error"]
    assert cand["s4"]["scores"]["judge.correctness"]["value"] == 2.0
    assert cand["s4"]["scores"]["pairwise"]["value"] == 0.0 and cand["s4"]["scores"]["pairwise"]["details"]["winner"] == "vs"
    gates_by = {g["name"]: g for g in summary["gates"]}
    # win rate: 4 ties (0.5) + 2 losses over 6 -> 0.333 < 0.5: the gate fails and names s1, s4
    assert gates_by["beats-base"]["passed"] is False
    assert gates_by["beats-base"]["observed"] == pytest.approx(2 / 6)
    assert code == 1
    st = summary["judges"]
    assert st["default"]["n"] == 12 and st["pairwise"]["n"] == 6 and st["pairwise"]["position_bias_rate"] == 0.0
    # rerun: every successful judgment is cached; the failed one is asked again (and now succeeds)
    code2 = main(["run", str(cfg), "--out", str(tmp_path / "out2"), "--no-progress"])
    s2 = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert s2["calls"]["judge_calls_made"] == 1 and s2["calls"]["judge_calls_cached"] == summary["calls"]["judge_calls_made"] - 1
    assert s2["errors"]["judge"] == 0 and code2 == 1
    for f in list(out.iterdir()):
        if f.is_file():
            assert "SECRET-1234" not in f.read_text(errors="ignore"), f


def test_gate_threshold_inside_the_judges_noise_is_no_decision(tmp_path, loopback_api):
    """repeats: 3 and a judge that answers 3, 5, 4 for the same prompt: a min 4.2 gate cannot be decided."""
    import threading
    from collections import Counter

    gen = extractor()
    seen: Counter = Counter()
    lock = threading.Lock()

    def respond(api, req):
        if requested_schema(api, req) is None:
            return gen(api, req)
        with lock:
            k = seen[last_user_text(req)]
            seen[last_user_text(req)] += 1
        return {"correctness": [3, 5, 4][k % 3], "format": 5, "completeness": 5, "notes": "ok"}

    loopback_api.set_responder(respond)
    make_suite(tmp_path)
    judges = (
        "judges:\n"
        f"  - rubric: default\n"
        f"    model: {{backend: openai, model: judge, base_url: '{loopback_api.base_url}', api_key_env: EK_TEST_KEY, concurrency: 1}}\n"
        "    repeats: 3\n"
    )
    gates = (
        "  - {name: noisy, metric: mean, scorer: judge.correctness, min: 4.2, on_no_decision: warn}\n"
        "  - {name: clear, metric: mean, scorer: judge.format, min: 4.5}\n"
    )
    cfg = write_eval(tmp_path, loopback_api.base_url, gates, extra=judges)
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    g = {x["name"]: x for x in summary["gates"] if x["model"] == "cand"}
    assert g["noisy"]["outcome"] in ("no_decision", "warn") and g["noisy"]["passed"] is None
    assert "noise" in g["noisy"]["detail"]
    assert g["clear"]["outcome"] == "pass"
    band = summary["judges"]["default"]["noise"]["cand"]["judge.correctness"]
    assert band["low"] <= 4.2 <= band["high"]
    assert code == 0  # on_no_decision: warn
