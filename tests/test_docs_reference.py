"""docs/reference.md is generated from the code (the config models, evalkit/registries.py): it must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_reference_page_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_reference.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_reference_names_every_key_and_kind():
    """A key added to a config model, or a backend kind declared, shows up without anyone editing the page."""
    from evalkit import config, registries

    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    for cls in (config.EvalConfig, config.ModelEntry, config.GateSpec, config.JudgeEntry):
        for name, f in cls.model_fields.items():
            assert f"| `{f.alias or name}` |" in text, (cls.__name__, name)
    for kind in registries.backend_names():
        assert f"| `{kind}` |" in text
    for metric in registries.metric_names():
        assert f"`{metric}`" in text
