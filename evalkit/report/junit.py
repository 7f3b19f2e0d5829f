"""JUnit XML: one testsuite, one testcase per gate result (classname = model, name = gate name).

A failed gate, or an undecided one that blocks the run, is a ``<failure>`` whose message names the
items; a warning passes and carries its reason in ``<system-out>``. Built with ElementTree so every
name and detail is escaped; characters XML 1.0 forbids are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from ..record import Reproducibility, RunSummary

_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(s: Any) -> str:
    return _ILLEGAL.sub("", str(s))


def _reproducibility_properties(rep: Reproducibility | None) -> list[tuple[str, str]]:
    """The run record's reproducibility block as flat ``evalkit.*`` properties (CI dashboards show them)."""
    out: list[tuple[str, str]] = []
    if rep is None:
        return out
    for k in ("evalkit_version", "git_commit", "git_dirty", "python", "platform"):
        v = getattr(rep, k)
        if v is not None and v != "":
            out.append((f"evalkit.{k}", str(v).lower() if isinstance(v, bool) else str(v)))
    for group in (rep.packages, rep.suites, rep.rubrics):
        name_of = "packages" if group is rep.packages else "suites" if group is rep.suites else "rubrics"
        for name, value in sorted(group.items()):
            if value:
                out.append((f"evalkit.{name_of}.{name}", str(value)))
    return out


def render_junit(summary: RunSummary | dict[str, Any], *, max_items: int = 50) -> str:
    summary = RunSummary.of(summary)
    gates = summary.gates
    failures = summary.blocking
    wall = summary.timing.wall_s
    root = ET.Element("testsuites", name="evalkit", tests=str(len(gates)), failures=str(len(failures)), errors="0", time=f"{wall:.3f}")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_clean(f"evalkit gates: {summary.name or summary.run_id}"),
        tests=str(len(gates)),
        failures=str(len(failures)),
        errors="0",
        skipped="0",
        time=f"{wall:.3f}",
        timestamp=_clean(summary.created[:19]),
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (("run_id", summary.run_id), ("baseline", summary.baseline), ("config_path", summary.config_path),
                 ("schema_version", summary.schema_version)):
        if v:
            ET.SubElement(props, "property", name=k, value=_clean(v))
    for k, v in _reproducibility_properties(summary.reproducibility):
        ET.SubElement(props, "property", name=k, value=_clean(v))
    for g in gates:
        tc = ET.SubElement(suite, "testcase", classname=_clean(g.model or "run"), name=_clean(g.name), time="0")
        items = list(g.failing_items)
        shown = ", ".join(items[:max_items]) + (f" and {len(items) - max_items} more" if len(items) > max_items else "")
        if g.outcome in ("fail", "no_decision"):
            msg = g.detail
            if items:
                msg += f" Items: {shown}"
            f = ET.SubElement(tc, "failure", message=_clean(msg), type="no_decision" if g.outcome == "no_decision" else "gate_failed")
            body = [f"observed: {g.observed}", f"threshold: {g.threshold}"]
            if g.p_value is not None:
                body.append(f"p_value: {g.p_value}")
            if g.mde is not None:
                body.append(f"mde (80% power): {g.mde}")
            body.append("failing items:")
            body.extend(f"  {i}" for i in items)
            f.text = _clean("\n".join(body))
        elif g.outcome == "warn":
            out = ET.SubElement(tc, "system-out")
            out.text = _clean(f"warning: {g.detail}" + (f" Items: {shown}" if items else ""))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
