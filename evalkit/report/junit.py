"""JUnit XML: one testsuite, one testcase per gate result (classname = model, name = gate name).

A failed gate, or an undecided one that blocks the run, is a ``<failure>`` whose message names the
items; a warning passes and carries its reason in ``<system-out>``. Built with ElementTree so every
name and detail is escaped; characters XML 1.0 forbids are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(s: Any) -> str:
    return _ILLEGAL.sub("", str(s))


def _reproducibility_properties(rep: dict[str, Any]) -> list[tuple[str, str]]:
    """The run record's reproducibility block as flat ``evalkit.*`` properties (CI dashboards show them)."""
    out: list[tuple[str, str]] = []
    for k in ("evalkit_version", "git_commit", "git_dirty", "python", "platform"):
        if rep.get(k) is not None:
            out.append((f"evalkit.{k}", str(rep[k]).lower() if isinstance(rep[k], bool) else str(rep[k])))
    for group in ("packages", "suites", "rubrics"):
        for name, value in sorted((rep.get(group) or {}).items()):
            if value:
                out.append((f"evalkit.{group}.{name}", str(value)))
    return out


def render_junit(summary: dict[str, Any], *, max_items: int = 50) -> str:
    gates = summary.get("gates") or []
    failures = [g for g in gates if g.get("outcome") in ("fail", "no_decision")]
    wall = (summary.get("timing") or {}).get("wall_s") or 0.0
    root = ET.Element("testsuites", name="evalkit", tests=str(len(gates)), failures=str(len(failures)), errors="0", time=f"{wall:.3f}")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_clean(f"evalkit gates: {summary.get('name') or summary.get('run_id', '')}"),
        tests=str(len(gates)),
        failures=str(len(failures)),
        errors="0",
        skipped="0",
        time=f"{wall:.3f}",
        timestamp=_clean(str(summary.get("created", ""))[:19]),
    )
    props = ET.SubElement(suite, "properties")
    for k in ("run_id", "baseline", "config_path", "schema_version"):
        if summary.get(k):
            ET.SubElement(props, "property", name=k, value=_clean(summary[k]))
    for k, v in _reproducibility_properties(summary.get("reproducibility") or {}):
        ET.SubElement(props, "property", name=k, value=_clean(v))
    for g in gates:
        tc = ET.SubElement(suite, "testcase", classname=_clean(g.get("model") or "run"), name=_clean(g.get("name", "")), time="0")
        items = list(g.get("failing_items") or [])
        shown = ", ".join(items[:max_items]) + (f" and {len(items) - max_items} more" if len(items) > max_items else "")
        outcome = g.get("outcome")
        if outcome in ("fail", "no_decision"):
            msg = g.get("detail", "")
            if items:
                msg += f" Items: {shown}"
            f = ET.SubElement(tc, "failure", message=_clean(msg), type="no_decision" if outcome == "no_decision" else "gate_failed")
            body = [f"observed: {g.get('observed')}", f"threshold: {g.get('threshold')}"]
            if g.get("p_value") is not None:
                body.append(f"p_value: {g['p_value']}")
            body.append("failing items:")
            body.extend(f"  {i}" for i in items)
            f.text = _clean("\n".join(body))
        elif outcome == "warn":
            out = ET.SubElement(tc, "system-out")
            out.text = _clean(f"warning: {g.get('detail', '')}" + (f" Items: {shown}" if items else ""))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
