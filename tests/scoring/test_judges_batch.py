"""Judges through the providers' batch APIs (`batch:` on a judge's model), with the real openai and
anthropic SDKs against the loopback server's /v1/files, /v1/batches and /v1/messages/batches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.store import Store
from tests.scoring.test_judges_run import model_and_judge
from tests.test_run import make_suite, write_eval

ROOT = Path(__file__).resolve().parents[2]
GATES = "  - {name: valid, metric: pass_rate, scorer: json_valid, min: 0}\n"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("EK_TEST_KEY", "sk-evalkit-test-SECRET-1234")
    from evalkit.models import structured as judge_client

    monkeypatch.setattr(judge_client, "BACKOFF_BASE_S", 0.02)


def _judges(url: str, backend: str, batch: str | None) -> str:
    b = f", batch: {batch}" if batch else ""
    model = f"{{backend: {backend}, model: judge, base_url: '{url}', api_key_env: EK_TEST_KEY{b}}}"
    return f"judges:\n  - rubric: default\n    model: {model}\n    prices: {{judge: {{input: 3.0, output: 15.0}}}}\n"


def _run(tmp_path: Path, api, out: str, backend: str, batch: str | None, store: str = "store.db") -> dict:
    url = api.base_url if backend == "openai" else api.anthropic_base_url
    cfg = write_eval(tmp_path, api.base_url, GATES, extra=_judges(url, backend, batch))
    code = main(["run", str(cfg), "--out", str(tmp_path / out), "--store", str(tmp_path / store), "--no-progress"])
    assert code in (0, 1)
    return json.loads((tmp_path / out / "summary.json").read_text())


def _means(summary: dict) -> dict:
    return {(m["model"], m["scorer"]): m["value"] for m in summary["metrics"] if m["scorer"].startswith("judge.")}


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_batched_judging_gives_the_direct_means_in_a_handful_of_requests(tmp_path, loopback_api, backend):
    loopback_api.set_responder(model_and_judge(broken_ids={1, 4}))
    loopback_api.batch_polls = 3
    make_suite(tmp_path)
    direct = _run(tmp_path, loopback_api, "direct", backend, None, store="direct.db")
    loopback_api.reset_stats()
    batched = _run(tmp_path, loopback_api, "batched", backend, "{poll_s: 0.01}", store="batched.db")
    assert _means(batched) == _means(direct) and _means(direct)
    # the same tokens at the batch discount
    cost_direct, cost_batch = direct["judges"]["default"]["cost"], batched["judges"]["default"]["cost"]
    assert cost_direct > 0 and cost_batch == pytest.approx(cost_direct * 0.5, rel=1e-3)
    [b] = batched["batches"]
    n = batched["calls"]["judge_calls_made"]
    assert b["provider"] == backend and b["requests"] == n and b["succeeded"] == n and b["errored"] == 0 and not b["resumed"]
    judge_http = [r for r in loopback_api.requests if "batches" in r.path or "/files" in r.path]
    creates = [a for a in loopback_api.batch_log if a[0] == "create"]
    assert len(creates) == 1 and creates[0][2] == n
    assert len(judge_http) <= 8  # upload + create + 3 polls + results: a handful, not one per judgment
    # the batch's answers are cached like direct ones: the same run again asks nothing
    loopback_api.reset_stats()
    again = _run(tmp_path, loopback_api, "again", backend, "{poll_s: 0.01}", store="batched.db")
    assert again["calls"]["judge_calls_made"] == 0 and again["batches"] == [] and _means(again) == _means(direct)


def test_errors_inside_a_batch_are_retried_in_a_follow_up_then_recorded(tmp_path, loopback_api):
    loopback_api.set_responder(model_and_judge())
    make_suite(tmp_path)
    # find the custom_ids (judgment keys) the run will use: a first run's store has them
    first = _run(tmp_path, loopback_api, "first", "openai", "{poll_s: 0.01}", store="first.db")
    with Store(tmp_path / "first.db") as st:
        ids = [r[0] for r in st.db.execute("SELECT custom_id FROM batch_requests ORDER BY custom_id")]
    n = first["calls"]["judge_calls_made"]
    assert len(ids) == n
    loopback_api.batch_log.clear()
    # one request fails inside one batch (then succeeds); another fails in every batch
    loopback_api.batch_item_errors = {ids[0]: 1, ids[1]: 99}
    out = _run(tmp_path, loopback_api, "faulty", "openai", "{poll_s: 0.01}", store="faulty.db")
    creates = [a for a in loopback_api.batch_log if a[0] == "create"]
    # first round n, then the two failures, then the stubborn one until max_retries (4) is spent: 1 + 4 batches
    assert [c[2] for c in creates] == [n, 2, 1, 1, 1]
    assert out["errors"]["judge"] >= 1
    with Store(tmp_path / "faulty.db") as st:
        rows = st.get_judgments([ids[0], ids[1]])
    assert rows[ids[0]]["verdict"] is not None and rows[ids[0]]["error"] is None
    assert rows[ids[1]]["verdict"] is None and "failed inside 5 batch(es)" in rows[ids[1]]["error"]
    assert sum(b["requests"] for b in out["batches"]) == n + 2 + 3  # every request counted once per batch, none lost


def _kill_while_polling(tmp_path: Path, api, polls: int) -> None:
    """A judged run in its own process whose batch never ends, SIGKILLed after ``polls`` polls."""
    api.set_responder(model_and_judge())
    api.batch_polls = 10**9
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, api.base_url, GATES, extra=_judges(api.base_url, "openai", "{poll_s: 0.05}"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), EVALKIT_CACHE=os.environ.get("EVALKIT_CACHE", str(tmp_path / "cache")))
    proc = subprocess.Popen([sys.executable, "-m", "evalkit.cli", "run", str(cfg), "--out", str(tmp_path / "o1"), "--store", str(tmp_path / "s.db"),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(1 for a in api.batch_log if a[0] == "retrieve") < polls:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_while_polling_then_rerun_resumes_the_same_batch(tmp_path, loopback_api, capsys):
    _kill_while_polling(tmp_path, loopback_api, polls=3)
    creates = [a for a in loopback_api.batch_log if a[0] == "create"]
    assert len(creates) == 1
    with Store(tmp_path / "s.db") as st:
        [rec] = st.list_batches()
    assert rec["id"] == creates[0][1] and rec["finished"] is None
    # the CLI shows it in flight and asks the provider where it stands
    assert main(["batches", "list", "--active", "--store", str(tmp_path / "s.db")]) == 0
    assert main(["batches", "status", rec["id"], "--store", str(tmp_path / "s.db")]) == 0
    shown = capsys.readouterr().out
    assert rec["id"] in shown and "(in flight)" in shown and f"{rec['id']}: in_progress; completed 0, failed 0, total {creates[0][2]}" in shown
    # the batch ends; the rerun polls the recorded batch and submits nothing new
    loopback_api.batch_polls = 1
    loopback_api.reset_stats()
    out = _run(tmp_path, loopback_api, "o2", "openai", "{poll_s: 0.05}", store="s.db")
    assert [a for a in loopback_api.batch_log if a[0] == "create"] == creates
    [b] = out["batches"]
    assert b["id"] == rec["id"] and b["resumed"] and b["succeeded"] == creates[0][2]
    assert out["errors"]["judge"] == 0 and out["calls"]["judge_calls_made"] == creates[0][2]


def test_a_mixed_run_batches_only_what_a_direct_run_left(tmp_path, loopback_api):
    loopback_api.set_responder(model_and_judge())
    make_suite(tmp_path)
    direct = _run(tmp_path, loopback_api, "direct", "openai", None, store="s.db")
    n = direct["calls"]["judge_calls_made"]
    with Store(tmp_path / "s.db") as st:  # forget a third of the judgments: the batch run makes just those
        keys = [r[0] for r in st.db.execute("SELECT key FROM judgments ORDER BY key")]
        gone = keys[: len(keys) // 3]
        st.db.execute(f"DELETE FROM judgments WHERE key IN ({','.join('?' * len(gone))})", gone)
        st.db.commit()
    loopback_api.batch_log.clear()
    out = _run(tmp_path, loopback_api, "mixed", "openai", "{poll_s: 0.01}", store="s.db")
    creates = [a for a in loopback_api.batch_log if a[0] == "create"]
    assert [c[2] for c in creates] == [len(gone)]
    assert out["calls"]["judge_calls_cached"] == n - len(gone) and _means(out) == _means(direct)


def test_batch_on_a_backend_without_a_batch_api_is_one_line(tmp_path, loopback_api, capsys):
    make_suite(tmp_path)
    judges = f"judges:\n  - rubric: default\n    model: {{backend: vllm, url: '{loopback_api.base_url}', path: m, batch: true}}\n"
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES, extra=judges)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch: needs a model whose provider has a batch API" in err[0] and "vLLM's server does not implement /v1/files" in err[0]
    assert not (tmp_path / "o").exists()


def test_a_provider_that_refuses_the_file_is_one_line(tmp_path, loopback_api, capsys):
    from tests.support.loopback import Fault

    loopback_api.set_responder(model_and_judge())
    loopback_api.add_faults([Fault.http(400, path_contains="/files", times=None)])
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES, extra=_judges(loopback_api.base_url, "openai", "{poll_s: 0.01}"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s.db"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the provider refused the batch" in err[-1] and "SECRET" not in err[-1]
    assert not (tmp_path / "o").exists()


def test_batches_cancel_then_a_run_sends_the_requests_again(tmp_path, loopback_api, capsys):
    """A batch cancelled from the CLI: the next run finds it cancelled and resends its requests in a new batch."""
    _kill_while_polling(tmp_path, loopback_api, polls=1)
    [(_, bid, n)] = [a for a in loopback_api.batch_log if a[0] == "create"]
    assert main(["batches", "cancel", bid, "--store", str(tmp_path / "s.db")]) == 0
    assert f"{bid}: cancelling" in capsys.readouterr().out
    loopback_api.batch_polls = 1
    out = _run(tmp_path, loopback_api, "o2", "openai", "{poll_s: 0.01}", store="s.db")
    creates = [a for a in loopback_api.batch_log if a[0] == "create"]
    assert len(creates) == 2 and creates[1][2] == n  # the cancelled batch's requests, sent once more
    assert out["errors"]["judge"] == 0 and {b["status"] for b in out["batches"]} == {"cancelled", "completed"}
    assert main(["batches", "status", "batch_nope", "--store", str(tmp_path / "s.db")]) == 2


def test_an_expired_batch_is_resent_and_a_batch_that_fails_validation_is_one_line(tmp_path, loopback_api, capsys):
    loopback_api.set_responder(model_and_judge())
    make_suite(tmp_path)
    loopback_api.batch_expire = 1  # the first batch expires: its requests go again in a follow-up
    out = _run(tmp_path, loopback_api, "o1", "openai", "{poll_s: 0.01}", store="s.db")
    statuses = [b["status"] for b in out["batches"]]
    assert statuses[0] == "expired" and statuses[-1] == "completed" and out["errors"]["judge"] == 0
    assert out["batches"][0]["errored"] == out["batches"][0]["requests"] == out["batches"][-1]["succeeded"]
    loopback_api.batch_invalid = True
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES, extra=_judges(loopback_api.base_url, "openai", "{poll_s: 0.01}"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o2"), "--store", str(tmp_path / "fresh.db"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed validation: loopback: the batch failed validation" in err[0]
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_api_candidates_through_batches_equal_direct_and_share_the_cache(tmp_path, loopback_api, backend):
    """batch: on a candidate: its generations go through the batch API, equal the direct ones, and are cached under the same keys."""
    from tests.test_run import extractor

    loopback_api.set_responder(extractor(broken_ids={2}))
    make_suite(tmp_path)
    url = loopback_api.base_url if backend == "openai" else loopback_api.anthropic_base_url

    def write(batch: str) -> Path:
        p = tmp_path / "eval.yaml"
        p.write_text(
            "models:\n"
            f"  base: {{backend: {backend}, model: base, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
            f"  cand: {{backend: {backend}, model: cand, base_url: '{url}', api_key_env: EK_TEST_KEY{batch}}}\n"
            "baseline: base\ncandidates: [cand]\nsuites: [suites/extract]\ngeneration: {max_new_tokens: 32, temperature: 0}\n"
            f"gates:\n{GATES}"
        )
        return p

    assert main(["run", str(write("")), "--out", str(tmp_path / "direct"), "--store", str(tmp_path / "d.db"), "--no-progress"]) in (0, 1)
    loopback_api.batch_log.clear()
    cfg = write(", batch: {poll_s: 0.01}")
    assert main(["run", str(cfg), "--out", str(tmp_path / "batched"), "--store", str(tmp_path / "b.db"), "--no-progress"]) in (0, 1)
    outs = {}
    for name in ("direct", "batched"):
        outs[name] = {(it["model"], it["sample_id"]): it["output"] for it in map(json.loads, (tmp_path / name / "items.jsonl").read_text().splitlines())}
    assert outs["batched"] == outs["direct"] and any(v and not v.startswith("{") for v in outs["direct"].values())
    s = json.loads((tmp_path / "batched" / "summary.json").read_text())
    creates = [a for a in loopback_api.batch_log if a[0] == "create"]
    assert len(creates) == 1 and creates[0][2] == 6  # the candidate's 6 prompts; the base went direct
    assert s["batches"][0]["requests"] == 6 and s["batches"][0]["succeeded"] == 6 and s["errors"]["generation"] == 0
    # the same keys as direct: a direct rerun on the batched store makes nothing
    assert main(["run", str(write("")), "--out", str(tmp_path / "again"), "--store", str(tmp_path / "b.db"), "--no-progress"]) in (0, 1)
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["calls"]["generations_made"] == 0 and len([a for a in loopback_api.batch_log if a[0] == "create"]) == 1


def test_a_batch_past_max_wait_is_one_line_and_stays_on_record(tmp_path, loopback_api, capsys):
    loopback_api.set_responder(model_and_judge())
    loopback_api.batch_polls = 10**9  # never ends
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES, extra=_judges(loopback_api.base_url, "openai", "{poll_s: 0.05, max_wait_h: 0.0001}"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s.db"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not end within max_wait_h=0.0001" in err[0] and "rerun to go on waiting" in err[0]
    assert not (tmp_path / "o").exists()
    with Store(tmp_path / "s.db") as st:
        [b] = st.list_batches(active_only=True)
    assert b["status"] == "in_progress"


def test_fallback_direct_sends_a_failed_request_as_a_direct_call(tmp_path, loopback_api):
    loopback_api.set_responder(model_and_judge())
    make_suite(tmp_path)
    first = _run(tmp_path, loopback_api, "first", "openai", "{poll_s: 0.01}", store="first.db")
    with Store(tmp_path / "first.db") as st:
        [cid] = [r[0] for r in st.db.execute("SELECT custom_id FROM batch_requests ORDER BY custom_id LIMIT 1")]
    loopback_api.batch_log.clear()
    loopback_api.reset_stats()
    loopback_api.batch_item_errors = {cid: 1}
    out = _run(tmp_path, loopback_api, "o", "openai", "{poll_s: 0.01, fallback: direct}", store="s.db")
    assert [a[0] for a in loopback_api.batch_log].count("create") == 1  # no follow-up batch
    direct_judge_calls = [r for r in loopback_api.requests if r.api == "openai" and (r.body or {}).get("model") == "judge"]
    assert len(direct_judge_calls) == 1  # the one request that failed inside the batch, asked directly
    assert out["errors"]["judge"] == 0 and out["calls"]["judge_calls_made"] == first["calls"]["judge_calls_made"]


def test_a_bad_batch_key_names_itself_with_file_and_line(tmp_path, loopback_api, capsys):
    make_suite(tmp_path)
    cfg = write_eval(tmp_path, loopback_api.base_url, GATES, extra=_judges(loopback_api.base_url, "openai", "{size: 0}"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.yaml:" in err[0] and "judges.0.model.batch.size: Input should be greater than or equal to 1" in err[0], err
