"""Fast tests of the vllm backend's pieces that need no model: adapter checks, server command line,
process hygiene with a stand-in interpreter, unreachable servers, parity arithmetic, the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from evalkit.cli import main
from evalkit.errors import BackendUnavailable, ConfigError
from evalkit.models.vllm import ALLOWED_LORA_RANKS, VLLMBackend, inspect_adapter, lora_rank_for
from evalkit.models.vllm_server import ServerCommand, VLLMServer, last_error_line
from evalkit.parity import Divergence, ModelParity, ParityReport, first_divergence
from evalkit.types import ModelSpec


def _adapter(tmp_path: Path, name: str = "ad", **cfg) -> Path:
    d = tmp_path / name
    d.mkdir()
    base = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    (d / "adapter_config.json").write_text(json.dumps({**base, **cfg}))
    (d / "adapter_model.safetensors").write_bytes(b"weights")
    return d


def test_lora_rank_rounds_up_to_an_allowed_value():
    assert lora_rank_for([4]) == 8
    assert lora_rank_for([8, 16]) == 16
    assert lora_rank_for([17]) == 32
    assert lora_rank_for([300]) == 320
    assert lora_rank_for([]) == 1
    assert set(ALLOWED_LORA_RANKS) >= {8, 16, 64}
    with pytest.raises(ConfigError, match="evalkit merge"):
        lora_rank_for([1024])


def test_inspect_adapter_reads_rank_pattern_and_names_by_content(tmp_path):
    d = _adapter(tmp_path, r=8, rank_pattern={"q_proj": 24})
    info = inspect_adapter("cand 1", d)
    assert info.rank == 24
    assert info.name.startswith("cand-1-") and " " not in info.name
    (d / "adapter_model.safetensors").write_bytes(b"other weights")
    assert inspect_adapter("cand 1", d).name != info.name  # retrained adapter: new name, no stale server copy


@pytest.mark.parametrize("cfg, what", [({"modules_to_save": ["lm_head"]}, "modules_to_save"), ({"use_dora": True}, "DoRA")])
def test_inspect_adapter_refuses_what_vllm_cannot_hot_swap(tmp_path, cfg, what):
    d = _adapter(tmp_path, **cfg)
    with pytest.raises(ConfigError) as e:
        inspect_adapter("cand", d)
    msg = e.value.one_line()
    assert what in msg and "evalkit merge" in msg and str(d) in msg


def test_inspect_adapter_missing_config(tmp_path):
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        inspect_adapter("cand", tmp_path)


def test_server_command_defaults_and_user_overrides():
    cmd = ServerCommand(
        model="/m", python="/py", lora_modules={"a-1": "/ad/a"}, enable_lora=True, max_lora_rank=16, max_loras=2,
        dtype="bfloat16", gpu_memory_utilization=0.2, port=1234, extra_args=["--max-lora-rank=64", "--max-model-len", "1024"],
    )
    argv = cmd.argv()
    assert argv[:5] == ["/py", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]
    assert argv[argv.index("--generation-config") + 1] == "vllm"
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.2"
    assert "--enable-lora" in argv and argv[argv.index("--lora-modules") + 1] == "a-1=/ad/a"
    # the user's --max-lora-rank wins: ours is not passed at all
    assert "--max-lora-rank" not in argv and "--max-lora-rank=64" in argv
    assert argv[-3:] == ["--max-lora-rank=64", "--max-model-len", "1024"]
    plain = ServerCommand(model="/m", port=1).argv()
    assert "--enable-lora" not in plain and "--dtype" not in plain and "--data-parallel-size" not in plain
    par = ServerCommand(model="/m", port=1, tensor_parallel_size=2, data_parallel_size=4).argv()
    assert par[par.index("--tensor-parallel-size") + 1] == "2" and par[par.index("--data-parallel-size") + 1] == "4"


def _fake_python(tmp_path: Path, body: str) -> Path:
    """A stand-in for the server's interpreter (a real process, no vLLM): ``python: path``."""
    p = tmp_path / "fake-python"
    p.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def test_server_crashing_at_start_up_names_the_log(tmp_path):
    py = _fake_python(tmp_path, """
        echo "INFO starting"
        echo "RuntimeError: Engine core initialization failed: boom" >&2
        exit 3
    """)
    log = tmp_path / "logs" / "server.log"
    server = VLLMServer(ServerCommand(model="/m", python=str(py)), log)
    with pytest.raises(BackendUnavailable) as e:
        server.start(timeout_s=30)
    msg = e.value.one_line()
    assert "exited with code 3" in msg and str(log) in msg and "boom" in msg
    assert "vllm.entrypoints.openai.api_server" in log.read_text()  # the command line is logged first
    assert last_error_line(log).startswith("RuntimeError")


def _group_alive(pgid: int) -> list[psutil.Process]:
    alive = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def test_ctrl_c_during_start_up_stops_the_whole_process_group(tmp_path):
    # A "server" that never becomes ready, ignores SIGTERM and has a child: the worst case.
    py = _fake_python(tmp_path, """
        trap '' TERM
        sleep 300 &
        while true; do sleep 1; done
    """)
    server = VLLMServer(ServerCommand(model="/m", python=str(py)), tmp_path / "s.log", grace_s=2)
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            server.start(timeout_s=60)
    finally:
        timer.cancel()
    pgid = server.proc.pid
    assert server.proc.poll() is not None
    assert _group_alive(pgid) == []
    assert time.monotonic() - t0 < 20  # SIGKILL after the grace period, not a hang


def test_unready_server_times_out_and_is_stopped(tmp_path):
    py = _fake_python(tmp_path, "sleep 300\n")
    server = VLLMServer(ServerCommand(model="/m", python=str(py)), tmp_path / "s.log")
    with pytest.raises(BackendUnavailable, match="did not become ready within 2 s"):
        server.start(timeout_s=2, poll_s=0.2)
    assert server.proc.poll() is not None and _group_alive(server.proc.pid) == []


def _tokenizer_dir(tmp_path: Path) -> Path:
    """A base 'checkpoint' with only a tokenizer: enough for everything that never loads weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>"] + [chr(c) for c in range(32, 127)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    t.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['role'] + ':' + m['content'] + '\n' }}{% endfor %}"
    d = tmp_path / "base"
    t.save_pretrained(d)
    return d


def test_unreachable_url_is_backend_unavailable(tmp_path):
    spec = ModelSpec(name="m", backend="vllm", path=str(tmp_path), options={"url": "http://127.0.0.1:9/v1"})
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:9 is unreachable"):
        VLLMBackend([spec])


def test_serve_mode_crash_through_the_cli_is_exit_2_with_log(tmp_path, capsys):
    base = _tokenizer_dir(tmp_path)
    py = _fake_python(tmp_path, 'echo "ValueError: unsupported model" >&2; exit 1\n')
    # --url: the fast path (checked before the hf side); then a crashing server in serve mode.
    code = main(["check-parity", "--base", str(base), "--url", "http://127.0.0.1:9", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "unreachable" in err and len(err.strip().splitlines()) == 1
    spec = ModelSpec(name="m", backend="vllm", path=str(base), options={"python": str(py), "log_dir": str(tmp_path / "logs")})
    with pytest.raises(BackendUnavailable) as e:
        VLLMBackend([spec])
    assert "unsupported model" in e.value.one_line() and str(tmp_path / "logs") in e.value.one_line()


def test_open_backend_routes_vllm_and_checks_the_adapter_first(tmp_path):
    from evalkit.models import open_backend

    bad = _adapter(tmp_path, modules_to_save=["embed_tokens"])
    spec = ModelSpec(name="cand", backend="vllm", path=str(tmp_path), adapter=str(bad), options={"url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="modules_to_save"):  # refused before any connection is tried
        open_backend([spec])


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([], [7]) == 0


def test_parity_report_rates_and_pass():
    d = Divergence(prompt_index=1, sample_id="s1", position=4, hf_token=5, vllm_token=6, hf_text="ab<x>", vllm_text="ac")
    rep = ParityReport(base="/m", dtype="bfloat16", max_new_tokens=8, models=(
        ModelParity("base", None, 4, 4, 4), ModelParity("cand", "/a", 4, 3, 3, (d,)),
    ))
    assert rep.rate == pytest.approx(7 / 8) and rep.min_rate == pytest.approx(0.75)
    assert rep.passed(0.75) and not rep.passed(1.0)
    out = rep.as_dict()
    assert out["models"][1]["mismatches"][0]["position"] == 4 and out["token_identical_rate"] == pytest.approx(0.875)
    text = "\n".join(rep.lines())
    assert "first divergence at token 4" in text and "3/4 token-identical" in text


def test_check_parity_help_and_bad_adapter_arg(capsys):
    from typer.testing import CliRunner

    from evalkit.cli import app

    res = CliRunner().invoke(app, ["check-parity", "--help"])
    assert res.exit_code == 0 and "token-identical" in res.output and "Example" in res.output
    assert main(["check-parity", "--base", "/nonexistent", "--adapter", "no-equals-sign"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["check-parity", "--base", "/nonexistent", "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_parity_options_validate_the_eval_yaml_block():
    from evalkit.parity import parity_options

    assert parity_options(None) is None
    opts = parity_options({"require": True, "min_rate": 0.9, "prompts": 4})
    assert opts.require and opts.min_rate == 0.9 and opts.prompts == 4 and opts.dtype == "bfloat16"
    with pytest.raises(ConfigError, match="eval.yaml: parity: unknown key 'prompt'"):
        parity_options({"prompt": 4}, where="eval.yaml: parity")
    with pytest.raises(ConfigError, match="min_rate"):
        parity_options({"min_rate": 2})


FAKE_SERVER = r'''
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port = int(args[args.index("--port") + 1]); model = args[args.index("--model") + 1]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def _json(self, obj):
        body = json.dumps(obj).encode(); self.send_response(200)
        self.send_header("content-type", "application/json"); self.send_header("content-length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health": return self._json({})
        return self._json({"data": [{"id": model, "root": model, "parent": None}]})
    def do_POST(self):
        print("RuntimeError: EngineCore died while serving", file=sys.stderr, flush=True)
        os._exit(1)
print("fake vllm server on", port, flush=True)
HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def test_server_dying_mid_run_is_backend_unavailable_with_log(tmp_path):
    """A 'server' that becomes ready, then dies on the first request (as an engine crash does)."""
    from evalkit.models.base import GenerationRequest
    from evalkit.types import GenerationParams, Message

    (tmp_path / "fake_server.py").write_text(FAKE_SERVER)
    py = _fake_python(tmp_path, f'shift 2\nexec {sys.executable} {tmp_path / "fake_server.py"} "$@"\n')
    base = _tokenizer_dir(tmp_path)
    spec = ModelSpec(name="m", backend="vllm", path=str(base), generation=GenerationParams(max_new_tokens=4),
                     options={"python": str(py), "log_dir": str(tmp_path / "logs"), "max_retries": 2})
    backend = VLLMBackend([spec])
    try:
        assert backend.base_model_id == str(base)
        with pytest.raises(BackendUnavailable) as e:
            backend.generate([GenerationRequest(key="k", model=spec, messages=(Message("user", "hi"),))])
        msg = e.value.one_line()
        assert "EngineCore died" in msg and str(backend.log_path) in msg
    finally:
        backend.close()
    assert not backend._server.alive()


OWNER = r'''
import sys, time
from pathlib import Path
from evalkit.models.vllm_server import ServerCommand, VLLMServer
py, log, pidfile = sys.argv[1:4]
server = VLLMServer(ServerCommand(model="/m", python=py), Path(log)).start(timeout_s=60, poll_s=0.2)
Path(pidfile).write_text(str(server.proc.pid))
time.sleep(300)
'''


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_server_does_not_outlive_a_killed_evalkit(tmp_path, sig):
    """SIGTERM skips atexit, SIGKILL skips everything: the server must go with its owner anyway."""
    import subprocess

    (tmp_path / "fake_server.py").write_text(FAKE_SERVER)
    py = _fake_python(tmp_path, f'shift 2\nexec {sys.executable} {tmp_path / "fake_server.py"} "$@"\n')
    (tmp_path / "owner.py").write_text(OWNER)
    pidfile = tmp_path / "server.pid"
    owner = subprocess.Popen([sys.executable, str(tmp_path / "owner.py"), str(py), str(tmp_path / "s.log"), str(pidfile)])
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() or not pidfile.read_text():
            assert owner.poll() is None and time.monotonic() < deadline, "owner died or server never became ready"
            time.sleep(0.2)
        server_pid = int(pidfile.read_text())
        assert psutil.pid_exists(server_pid)
        owner.send_signal(sig)
        owner.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _group_alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _group_alive(server_pid) == []
    finally:
        if owner.poll() is None:
            owner.kill()


@pytest.mark.parametrize("require", [True, False])
def test_run_parity_block_require_stops_or_warns(tmp_path, capsys, monkeypatch, require):
    """eval.yaml `parity:` below min_rate: with require, exit 2 before anything is generated (no store
    rows, no outputs); without it, a warning and the run goes on (here to the unreachable server).
    """
    import evalkit.parity as parity_mod

    base = tmp_path / "base"
    base.mkdir()
    adapter = _adapter(tmp_path)
    seen = {}

    def fake_check(base_path, adapters, prompts, **kw):  # the real one needs a model and a server
        seen.update(base=base_path, adapters=dict(adapters), prompts=[p.id for p in prompts], **kw)
        return ParityReport(base=str(base_path), dtype=kw["dtype"], max_new_tokens=kw["max_new_tokens"], models=(
            ModelParity("base", None, 2, 2, 2), ModelParity("cand", str(adapter), 2, 1, 1)))

    monkeypatch.setattr(parity_mod, "check_parity", fake_check)
    suite = tmp_path / "suites" / "s"
    suite.mkdir(parents=True)
    (suite / "suite.yaml").write_text("name: s\nsamples: samples.jsonl\nscorers: [{max_chars: 10}]\n")
    (suite / "samples.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": "hi"}]}) + "\n" for i in range(3)))
    entry = f"backend: vllm, path: '{base}', url: 'http://127.0.0.1:9'"
    (tmp_path / "eval.yaml").write_text(
        f"models:\n  base: {{{entry}}}\n  cand: {{{entry}, adapter: '{adapter}'}}\nbaseline: base\n"
        f"suites: [suites/s]\nstore: store.db\nparity: {{require: {str(require).lower()}, min_rate: 0.9, prompts: 2, dtype: float32}}\n"
    )
    code = main(["run", str(tmp_path / "eval.yaml"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert seen["prompts"] == ["q0", "q1"] and seen["adapters"] == {"cand": str(adapter)} and seen["dtype"] == "float32"
    assert seen["vllm_options"]["url"] == "http://127.0.0.1:9"
    assert code == 2
    if require:
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "eval.yaml" in last and "50%" in last and "'cand'" in last and "parity.require" in last
        assert not (tmp_path / "out").exists() and not (tmp_path / "store.db").exists()
    else:  # only a warning: the run goes on past the check to generation, and meets the unreachable server
        assert "cand" in err and "1/2 token-identical" in err
        last = err.strip().splitlines()[-1]
        assert "unreachable" in last and "127.0.0.1:9" in last and "parity" not in last
