"""The package's layers (DESIGN.md): imports point down only, imports inside functions included.

The import graph is read from the source with ``ast`` (every ``import`` and ``from ... import``,
at module level or inside a function), so a cycle closed through a lazy import counts. Checked:

- every import goes to the same layer or a lower one (entry points > stages > gates/scoring/stats >
  store/record > config > models/registries > types/errors/_util);
- no import cycle at all, inside a package either;
- inside ``evalkit.models`` the same rule: protocols and shared helpers (``base``, ``retry``,
  ``weights``, ``api_common``, ``vllm_server``) at the bottom, the backends above them, the
  registry above the backends, structured generation and batches above the registry, the package's
  ``__init__`` (``open_backend``, ``open_structured``) on top — a backend never imports the registry;
- the names config validation reads (``evalkit.registries``) are exactly the implemented ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "evalkit"

LAYERS = [  # bottom first
    ["evalkit", "evalkit.types", "evalkit.errors", "evalkit._util", "evalkit.registries"],
    ["evalkit.models"],
    ["evalkit.config"],
    ["evalkit.store", "evalkit._db", "evalkit.record"],
    ["evalkit.gates", "evalkit.scoring", "evalkit.stats", "evalkit.rubrics"],
    ["evalkit.run", "evalkit.review", "evalkit.report", "evalkit.train", "evalkit.data", "evalkit.demo_model", "evalkit.parity", "evalkit.planning", "evalkit.noise",
     "evalkit.calibration"],
    ["evalkit.cli", "evalkit.commands", "evalkit.demo", "evalkit.__main__"],
]


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                k = known(t)
                if k and k != m:
                    edges[m].add(k)
    return edges


def layer(module: str) -> int:
    best = (-1, -1)
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best[1]:
                best = (i, len(p))
    assert best[0] >= 0, f"{module} is in no layer: add it to LAYERS (and DESIGN.md)"
    return best[0]


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(comp)
    return out


def test_imports_point_down_only():
    edges = import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer(b) > layer(a))
    assert upward == []


def test_no_import_cycle():
    assert [sorted(c) for c in cycles(import_graph())] == []


MODEL_LAYERS = [  # bottom first, inside evalkit.models
    {"base", "retry", "weights", "api_common", "vllm_server", "loglik", "kvcache"},
    {"hf", "openai_backend", "anthropic_backend", "vllm"},
    {"registry"},
    {"structured", "ray_engine"},
    {"batch"},
    {""},  # evalkit.models itself
]


def test_the_model_layer_is_layered_too():
    edges = import_graph()
    rank = {f"evalkit.models.{m}".rstrip("."): i for i, names in enumerate(MODEL_LAYERS) for m in names}
    models = [m for m in edges if m == "evalkit.models" or m.startswith("evalkit.models.")]
    assert sorted(models) == sorted(rank), "a new module in evalkit.models: give it a place in MODEL_LAYERS"
    upward = sorted(f"{a} -> {b}" for a in models for b in edges[a] if b in rank and rank[b] > rank[a])
    assert upward == []


def test_config_asks_the_registries_and_imports_no_stage():
    edges = import_graph()
    assert {layer(t) for t in edges["evalkit.config"]} <= {0}, sorted(edges["evalkit.config"])


def test_declared_names_are_the_implemented_ones():
    from evalkit import gates, models, registries
    from evalkit.models import registry

    assert models.backend_names() == registries.backend_names() == sorted(registry._REGISTRY)
    assert gates.metric_names() == registries.metric_names()


def test_gate_metrics_use_only_the_public_metric_api():
    """A metric module imports gates.api, never core's private names (the contract a new metric is written against)."""
    edges = import_graph()
    metrics = [m for m in edges if m.startswith("evalkit.gates.metrics.")]
    assert metrics and all("evalkit.gates.core" not in edges[m] for m in metrics), {m: sorted(edges[m]) for m in metrics}
    assert all("evalkit.gates.api" in edges[m] for m in metrics)
