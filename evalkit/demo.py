"""The offline demo (the embedded default): the whole loop on a tiny model, on the CPU, no network.

1. build (or reuse) the demo base: evalkit's own deterministic recipe (evalkit.demo_model), or use
   the checkpoint given with ``--base``
2. data: a format task (extract fields into JSON matching a schema) -> seeded split with a frozen
   held-out test set (evalkit.data.split); general examples, minus the regression suite's prompts
3. train two QLoRA candidates on one base (evalkit.train): ``narrow`` (the format task alone) and
   ``mixed`` (the same plus general examples, against forgetting)
4. run base and both adapters in one run on one loaded base, on the regression suite (general
   tasks + format), the retention suite (the general prompts as multiple choice, scored by
   log-likelihood) and the held-out split
5. gates pick the candidate to ship; reports, per-stage times and the next commands
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ._util.text import terminal_safe

DEMO_SEED = 1234


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def regression_suite_rows(n_general: int = 40, n_format: int = 10) -> list[dict[str, Any]]:
    """The demo regression suite: general tasks (what fine-tuning must not break) + format items."""
    from .demo_model import extraction_examples, general_examples

    rows = []
    for i, ex in enumerate(general_examples(n_general, seed=DEMO_SEED + 1)):
        rows.append({**ex, "id": f"general-{i:03d}", "tags": sorted(set(ex.get("tags", [])) | {"general"})})
    for i, ex in enumerate(extraction_examples(n_format, seed=DEMO_SEED + 2)):
        rows.append({**ex, "id": f"format-{i:03d}", "tags": sorted(set(ex.get("tags", [])) | {"format"})})
    return rows


def write_regression_suite(dest: Path, *, n_general: int = 40, n_format: int = 10) -> Path:
    """Write suites/demo-regression (committed in the repo; regenerated identically by this function)."""
    from .demo_model import EXTRACTION_SCHEMA

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "schema.json").write_text(json.dumps(EXTRACTION_SCHEMA, indent=2) + "\n")
    (dest / "suite.yaml").write_text(
        "# The demo's regression suite: general tasks the fine-tune must not break, and the format task.\n"
        "name: demo-regression\n"
        "kind: regression\n"
        "samples: samples.jsonl\n"
        "scorers:\n"
        "  - {exact_match: {normalize: [json, whitespace]}}\n"
        "  - {json_valid: {tags: [format]}}\n"
        "  - {json_schema: {schema: schema.json, tags: [format]}}\n"
    )
    _write_jsonl(dest / "samples.jsonl", regression_suite_rows(n_general, n_format))
    return dest


END_OF_TURN = "<|end|>"  # the demo template's end of an assistant turn: a choice is a whole answer, not a prefix


def retention_suite_rows() -> list[dict[str, Any]]:
    """The demo's retention suite: the regression suite's general prompts as multiple-choice items,
    scored by log-likelihood (what the base knows, and a fine-tune may forget). Each item's choices
    are its answer and three wrong answers made from it (reversed, case swapped, another item's answer
    of the same task, a number off by one, a neighbouring letter), in a position that rotates; every
    choice ends the turn.
    """
    reg = [r for r in regression_suite_rows() if "general" in r["tags"]]
    by_task: dict[str, list[str]] = {}
    for r in reg:
        task = next(t for t in r["tags"] if t != "general")
        by_task.setdefault(task, []).append(r["messages"][-1]["content"])
    rows = []
    for i, r in enumerate(reg):
        answer = r["messages"][-1]["content"]
        task = next(t for t in r["tags"] if t != "general")
        pool = [answer[::-1], answer.swapcase(), *[a for a in by_task[task] if a != answer]]
        if answer.isdigit():
            pool += [str(int(answer) + 1), str(int(answer) + 2), *([str(int(answer) - 1)] if int(answer) else [])]
        if len(answer) == 1 and answer.isalpha():  # a letter: its neighbours in the alphabet
            pool += [chr(ord(answer) + 1) if answer not in "zZ" else chr(ord(answer) - 2), chr(ord(answer) - 1) if answer not in "aA" else chr(ord(answer) + 2)]
        wrong: list[str] = []
        for w in pool:
            if w != answer and w not in wrong and w.strip():
                wrong.append(w)
        wrong = wrong[:3]
        at = i % (len(wrong) + 1)
        choices = [*wrong[:at], answer, *wrong[at:]]
        rows.append({"id": r["id"].replace("general", "retention"), "messages": r["messages"][:-1],
                     "choices": [c + END_OF_TURN for c in choices], "answer": at, "tags": r["tags"]})
    return rows


def write_retention_suite(dest: Path) -> Path:
    """Write suites/demo-retention (committed in the repo; regenerated identically by this function)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "suite.yaml").write_text(
        "# The demo's retention suite: the general prompts as multiple-choice items scored by log-likelihood\n"
        "# (choice: the most likely answer; choice_norm: per character), as lm-evaluation-harness scores them.\n"
        "name: demo-retention\n"
        "kind: regression\n"
        "samples: samples.jsonl\n"
    )
    _write_jsonl(dest / "samples.jsonl", retention_suite_rows())
    return dest


def write_heldout_suite(dest: Path, test_file: Path, manifest: Path | None) -> Path:
    from .demo_model import EXTRACTION_SCHEMA

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "schema.json").write_text(json.dumps(EXTRACTION_SCHEMA, indent=2) + "\n")
    shutil.copyfile(test_file, dest / "samples.jsonl")
    lines = [
        "# The held-out split of the format task, frozen by its split manifest.",
        "name: demo-heldout",
        "kind: heldout",
        "samples: samples.jsonl",
    ]
    if manifest is not None:
        lines.append(f"manifest: {manifest}")
    lines += ["scorers:", "  - json_valid", "  - {json_schema: schema.json}", "  - {exact_match: {normalize: json}}"]
    (dest / "suite.yaml").write_text("\n".join(lines) + "\n")
    return dest


def demo_eval_config(base: Path, adapters: dict[str, Path], suites: list[Path], store: Path, *, dtype: str = "float32") -> dict[str, Any]:
    """The demo's eval.yaml: what a team would gate a format fine-tune on, for every candidate.

    format: schema-valid JSON on the held-out split (the base cannot);
    heldout-accuracy: the right field values, not only the right shape (exact match, JSON-normalised);
    beats-base: significantly more held-out items right than the base (paired, McNemar);
    general-regressions: the general items the base gets right must stay right (at most 2 of the 40 may
      flip: a good candidate loses one or two of the most fragile ones, reversing or sorting letters);
    general-retention: the same, measured by log-likelihood on the retention suite (the most likely of
      four answers must stay the right one: lm-eval's acc), with the same allowance of 2;
    adapter-applied: the candidate's outputs must differ from the base's (the silent no-op).
    """
    return {
        "name": "demo",
        "models": {
            "base": {"backend": "hf", "path": str(base), "batch_size": 16, "dtype": dtype},
            **{name: {"backend": "hf", "path": str(base), "adapter": str(a), "batch_size": 16, "dtype": dtype} for name, a in adapters.items()},
        },
        "baseline": "base",
        "candidates": list(adapters),
        "suites": [str(s) for s in suites],
        "generation": {"max_new_tokens": 64, "temperature": 0},
        "store": str(store),
        "gates": [
            {"name": "format", "metric": "pass_rate", "scorer": "json_schema", "suite": "demo-heldout", "min": 0.8},
            {"name": "heldout-accuracy", "metric": "pass_rate", "scorer": "exact_match", "suite": "demo-heldout", "min": 0.5},
            {"name": "beats-base", "metric": "pass_rate", "scorer": "exact_match", "suite": "demo-heldout", "vs": "baseline", "min": 0, "significant": 0.05},
            {"name": "general-regressions", "metric": "regressions", "scorer": "exact_match", "suite": "demo-regression",
             "tag": "general", "vs": "baseline", "max": 2},
            *([{"name": "general-retention", "metric": "regressions", "scorer": "choice", "suite": "demo-retention", "vs": "baseline", "max": 2}]
              if any(Path(s).name == "demo-retention" for s in suites) else []),
            {"name": "adapter-applied", "metric": "adapter_applied"},
        ],
    }


# Two QLoRA candidates on one base, as a team iterating would: `narrow` learns the format task
# alone; `mixed` is the same recipe with general examples mixed in (the usual remedy for
# forgetting). LoRA on the attention projections only: on this tiny base, adapting the MLPs too
# forgot 3-6 of the general items the base gets right in every setting tried (README, "The demo").
DEMO_TRAIN: dict[str, Any] = {
    "quantize": "nf4",
    "dtype": "float32",  # never `auto`: that trains in bf16 on CPUs with AMX / AVX512-BF16 and in fp32 elsewhere
    "epochs": 5,
    "batch_size": 16,
    "lr": 3e-3,
    "max_seq_len": 256,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "patience": None,
}
DEMO_MIX_FRACTION = 0.7
# --base (a real checkpoint): the tiny base's high learning rate would wreck a pretrained model;
# these are the usual LoRA settings instead
REAL_BASE_TRAIN: dict[str, Any] = {"dtype": "auto", "lr": 2e-4, "epochs": 2, "batch_size": 8, "max_seq_len": 512,
                                   "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}}
CANDIDATES: dict[str, float | None] = {"narrow": None, "mixed": DEMO_MIX_FRACTION}  # name -> share of general examples


def _regression_suite(work: Path) -> Path:
    """The committed suites/demo-regression when running from a checkout, else the same suite written
    by the recipe into the work folder (an installed package has no suites/ folder).
    """
    committed = Path(__file__).resolve().parents[1] / "suites" / "demo-regression"
    if (committed / "suite.yaml").is_file():
        return committed
    return write_regression_suite(work / "suites" / "demo-regression")


def _retention_suite(work: Path) -> Path:
    """suites/demo-retention from a checkout, else written by the recipe into the work folder."""
    committed = Path(__file__).resolve().parents[1] / "suites" / "demo-retention"
    if (committed / "suite.yaml").is_file():
        return committed
    return write_retention_suite(work / "suites" / "demo-retention")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _general_mix(n: int, reg_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """General examples for the mixed candidate, minus any whose prompt is in the regression suite:
    training on the eval's own items would make its regression gate meaningless (and evalkit's
    contamination check would say so).
    """
    from .demo_model import general_examples

    held = {r["messages"][0]["content"] for r in reg_rows}
    return [g for g in general_examples(n, seed=DEMO_SEED + 7) if g["messages"][0]["content"] not in held]


def _check_base(base: Path) -> Path:
    from .errors import UserError

    base = Path(base).expanduser()
    if not (base / "config.json").is_file():
        raise UserError("--base: not a Hugging Face checkpoint folder (no config.json)", where=base)
    return base.resolve()


def _run_pinned(*, out: Path, work: Path | None, progress: bool, rebuild_base: bool) -> int:
    """The same demo in a child process whose CPU kernels are pinned (evalkit._util.repro): the
    libraries read those settings once, before their first operation, so this process cannot
    switch them any more. Its stdout comes back through this process's (printed as it arrives).
    """
    import subprocess

    from ._util.repro import pinned_env

    cmd = [sys.executable, "-m", "evalkit.cli", "demo", "--out", str(out)]
    cmd += ["--work", str(work)] if work is not None else []
    cmd += [] if progress else ["--no-progress"]
    cmd += ["--rebuild-base"] if rebuild_base else []
    with subprocess.Popen(cmd, env=pinned_env(), stdout=subprocess.PIPE, text=True, encoding="utf-8", errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
    return proc.returncode


def run_demo(*, out: Path, work: Path | None = None, progress: bool = True, base: Path | None = None, rebuild_base: bool = False) -> int:
    from ._util.repro import kernels_pinned
    from .errors import UserError

    given = _check_base(base) if base is not None else None
    if given is not None and rebuild_base:
        raise UserError("--rebuild-base builds the tiny demo base; it cannot be combined with --base")
    if given is None and not kernels_pinned():
        return _run_pinned(out=out, work=work, progress=progress, rebuild_base=rebuild_base)
    return _run_demo(out=out, work=work, progress=progress, given=given, rebuild_base=rebuild_base)


def _run_demo(*, out: Path, work: Path | None, progress: bool, given: Path | None, rebuild_base: bool) -> int:
    from .data.split import split_dataset
    from .demo_model import cache_root, demo_base, differs_from_shipped, extraction_examples
    from .run import run_eval
    from .train import TrainConfig, train
    from .train.config import MixSettings

    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    work = Path(work) if work else cache_root() / "demo"
    work.mkdir(parents=True, exist_ok=True)
    mismatches: list[str] = []  # figures (or the base) that differ from the reference: the story may differ
    other_bytes: list[str] = []  # candidates trained to other bytes: said, but the figures decide

    t = time.perf_counter()
    if given is None and rebuild_base:
        _say("[1/6] demo base model: rebuilding it by evalkit's recipe (--rebuild-base; minutes)")
        base_dir = demo_base(progress=progress, rebuild=True)
        differ = differs_from_shipped(base_dir)
        if differ:
            mismatches.append(f"the rebuilt base differs from the shipped one ({', '.join(differ)}); the demo uses the rebuilt {base_dir}")
        else:
            _say(f"      byte-identical to the shipped base: {base_dir}")
    elif given is None:
        _say("[1/6] demo base model (shipped with evalkit, built by its recipe; `--rebuild-base` builds it here)")
        base_dir = demo_base(progress=progress)
    else:
        _say(f"[1/6] base model: {given} (--base: no tiny base is built)")
        base_dir = given
    stages["base"] = time.perf_counter() - t

    t = time.perf_counter()
    _say("[2/6] data: the format task, split with a frozen held-out test set; general examples for the mix")
    data = work / "data"
    _write_jsonl(data / "extract.jsonl", extraction_examples(400, seed=DEMO_SEED))
    _write_jsonl(data / "general.jsonl", _general_mix(1200, regression_suite_rows()))
    split = split_dataset(data / "extract.jsonl", data / "split", ratios=(0.8, 0.1, 0.1), seed=DEMO_SEED, force=True)
    stages["data"] = time.perf_counter() - t

    adapters: dict[str, Path] = {}
    for i, (name, fraction) in enumerate(CANDIDATES.items()):
        t = time.perf_counter()
        what = "the format task alone" if fraction is None else f"the format task + {int(fraction * 100)}% general examples"
        _say(f"[{3 + i}/6] QLoRA candidate '{name}': {what} (4-bit NF4 base + LoRA)")
        cfg = TrainConfig(
            base=str(base_dir),
            train=str(split.files["train"]),
            val=str(split.files["val"]),
            mix=MixSettings(file=str(data / "general.jsonl"), fraction=fraction) if fraction is not None else None,
            seed=DEMO_SEED,
            name=name,
            **({**DEMO_TRAIN, **REAL_BASE_TRAIN} if given is not None else DEMO_TRAIN),
        )
        adapters[name] = train(cfg, work / name, progress=progress, reuse=True).adapter_dir  # an identical earlier candidate is reused
        stages[f"training {name}"] = time.perf_counter() - t
    reference = _reference() if given is None else None
    if reference is not None:
        other_bytes += [n for n, a in adapters.items() if reference["adapters"].get(n) != _sha256(a / "adapter_model.safetensors")]

    _say("[5/6] evaluate base + both candidates in one run (one loaded base, adapters hot-swapped): regression suite, "
         "retention suite (multiple choice, by log-likelihood) + held-out split")
    reg = _regression_suite(work)
    # the retention suite's choices end with the tiny base's end-of-turn marker: a real --base has its own template
    ret = [_retention_suite(work)] if given is None else []
    held = write_heldout_suite(work / "suites" / "demo-heldout", split.files["test"], split.manifest_path)
    eval_yaml = work / "eval.yaml"
    eval_yaml.write_text(yaml.safe_dump(demo_eval_config(base_dir, adapters, [reg, *ret, held], work / "store.db",
                                                         dtype="float32" if given is None else "auto"), sort_keys=False))
    t = time.perf_counter()
    run = run_eval(eval_yaml, out, progress=progress)
    timing = run.summary.get("timing") or {}
    stages["generation"] = float(timing.get("generate_s") or 0.0)
    stages["scoring"] = float(timing.get("score_s") or 0.0)
    stages["gates and reports"] = max(0.0, time.perf_counter() - t - stages["generation"] - stages["scoring"])

    _say("[6/6] verdict")
    print(run.console_summary)
    print(_comparison_table(run.summary))
    if reference is not None:
        table = _table_figures(run.summary)
        mismatches += [f"{k}: {v:.3f} here, {reference['table'].get(k)} in the reference" for k, v in table.items() if reference["table"].get(k) != round(v, 4)]
        if mismatches:
            print(f"\nNote: these figures differ from evalkit's reference ({reference['machine']}; torch {reference['torch']}) on this machine"
                  f" (torch {_torch_version()}): {terminal_safe('; '.join(mismatches[:3]), one_line=True)}"
                  + (f" (+{len(mismatches) - 3} more)" if len(mismatches) > 3 else "")
                  + ". The story may differ from the README's table; please report it with `evalkit --version` and your CPU.")
        elif other_bytes:
            print(f"\nSame figures as evalkit's reference ({reference['machine']}): every figure and verdict equal; the candidates "
                  f"{' and '.join(repr(n) for n in other_bytes)} trained to other adapter bytes here ({terminal_safe(_cpu_name(), one_line=True)})"
                  " than there, a difference below what any figure shows.")
        else:
            print(f"\nSame figures as evalkit's reference ({reference['machine']}): both candidates trained to the same bytes, every figure equal.")
    ships = [c for c, ok in (run.summary.get("candidate_verdicts") or {}).items() if ok]
    print(
        "\nWhat the gates check: format (the JSON shape), heldout-accuracy and beats-base (the right field values,"
        "\nsignificantly better than the base), general-regressions (general tasks the base got right, named when broken)"
        + (", general-retention (the same tasks by log-likelihood: the right answer must stay the most likely of four)." if ret else ".")
        + (f"\nShip: {', '.join(ships)}." if ships else "\nNo candidate passed every gate.")
    )
    print("\nTime per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()) + f"; total {time.perf_counter() - t0:.0f} s")
    review = ships[0] if ships else next(iter(adapters))
    print("\nNext:")
    print(f"  open {Path(out) / 'report.html'}")
    print(f"  evalkit review new {out} --a {review} --b base --n 20      # a blinded spot-check of {review} vs the base")
    print(f"  evalkit run {eval_yaml} --out DIR                          # rerun the gates (no model call: every output is cached)")
    print(f"The gate run exits {run.exit_code}: every candidate must pass for exit 0 (one gate set, as `evalkit run` gives CI).")
    return 0


REFERENCE_FILE = Path(__file__).resolve().parent / "demo_assets" / "reference.json"


def _reference() -> dict[str, Any] | None:
    """What the demo prints on every x86-64 machine (demo_assets/reference.json), or None when the
    shipped base does not belong to this recipe (a changed recipe, not yet reshipped).
    """
    from .demo_model import shipped_base

    if shipped_base() is None or not REFERENCE_FILE.is_file():
        return None
    return dict(json.loads(REFERENCE_FILE.read_text(encoding="utf-8")))


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _cpu_name() -> str:
    """This machine's CPU as /proc/cpuinfo names it (the vendor matters to MKL), for the reference line."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str:
    from ._util.provenance import package_versions

    return package_versions(("torch",)).get("torch") or "?"


def _table_figures(summary: dict[str, Any]) -> dict[str, float]:
    """model/suite/scorer -> value, and model/gate -> observed: the figures the demo's story rests on."""
    out = {f"{m['model']}/{m['suite']}/{m['scorer']}": float(m["value"]) for m in summary["metrics"] if m.get("value") is not None}
    out |= {f"{g['model']}/gate:{g['name']}": float(g["observed"]) for g in summary["gates"] if isinstance(g.get("observed"), (int, float))}
    return out


def write_reference(summary: dict[str, Any], adapters: dict[str, Path], machine: str) -> Path:
    """Record a demo run as the reference (scripts/demo_reference.py; only after checking that the
    figures come out the same on machines with different CPUs).
    """
    ref = {
        "machine": machine,
        "torch": _torch_version(),
        "adapters": {n: _sha256(Path(a) / "adapter_model.safetensors") for n, a in adapters.items()},
        "table": {k: round(v, 4) for k, v in sorted(_table_figures(summary).items())},
    }
    REFERENCE_FILE.write_text(json.dumps(ref, indent=2) + "\n", encoding="utf-8")
    return REFERENCE_FILE


def _comparison_table(summary: dict[str, Any]) -> str:
    """Base vs candidate, per suite and scorer: what fine-tuning bought and what it cost."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for m in summary["metrics"]:
        rows.setdefault((m["suite"], m["scorer"]), {})[m["model"]] = m["value"]
    models = [summary["baseline"], *summary["candidates"]]
    lines = ["", "| suite | scorer | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for (suite, scorer), vals in sorted(rows.items()):
        cells = [f"{vals[m]:.3f}" if vals.get(m) is not None else "-" for m in models]
        lines.append(f"| {suite} | {scorer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
