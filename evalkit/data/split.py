"""``evalkit data split``: seeded (optionally tag-stratified) train/val/test split, frozen by a manifest.

The split writes ``OUT/train.jsonl``, ``OUT/val.jsonl``, ``OUT/test.jsonl`` (lines copied verbatim)
and ``OUT/split.json``: source hash, seed, ratios, and for every split its file's SHA-256, line
count and the content hash of each held-out example. A folder that has a manifest is frozen:
splitting into it again refuses unless ``force``.

Held-out suites point at the manifest with ``manifest: FILE`` in suite.yaml (relative to the suite
folder). Without that key, ``split.json`` in the suite folder, then in the folder of the samples
file, is used by convention. :func:`check_heldout` compares the samples file with it.

Memory: two passes over the source; between them ~10 bytes per line (stratum index and assignment).
"""

from __future__ import annotations

import datetime as _dt
import json
from array import array
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._util.fs import atomic_writer, write_json_atomic
from ..errors import DataError, UserError
from ..types import stable_hash
from ._io import file_sha256, iter_raw_lines, progress_bar

MANIFEST_NAME = "split.json"
SPLITS = ("train", "val", "test")
HELDOUT = ("val", "test")
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SplitResult:
    manifest_path: Path
    counts: dict[str, int]
    files: dict[str, Path]
    strata: int


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` or ``"80/10/10"`` -> three fractions summing to 1."""
    parts = [p for p in text.replace("/", ",").replace(":", ",").split(",") if p.strip()]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"--ratios: expected three numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(vals) != 3 or any(v < 0 for v in vals) or sum(vals) <= 0:
        raise UserError(f"--ratios: expected three non-negative numbers (train,val,test), got {text!r}")
    total = sum(vals)
    if not (abs(total - 1) < 1e-6 or abs(total - 100) < 1e-4):
        raise UserError(f"--ratios: must sum to 1 (or 100), got {total:g}")
    return tuple(v / total for v in vals)  # type: ignore[return-value]


def example_hash(obj: Any) -> str:
    """Content hash of one example, independent of key order and whitespace."""
    return stable_hash(obj, 16)


def _allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Split n items by ratios with the largest-remainder method (counts sum to n exactly)."""
    raw = [n * r for r in ratios]
    counts = [int(x) for x in raw]
    rest = n - sum(counts)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


def split_dataset(
    source: str | Path,
    out_dir: str | Path,
    *,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = False,
    force: bool = False,
    progress: bool = False,
) -> SplitResult:
    """Split ``source`` (chat JSONL) into ``out_dir``. Same source + seed + ratios -> same files."""
    src = Path(source)
    out = Path(out_dir)
    manifest_path = out / MANIFEST_NAME
    if not src.is_file():
        raise DataError("file not found", where=src)
    if manifest_path.exists() and not force:
        raise UserError(
            f"{manifest_path} exists: this split is frozen (its held-out files are what eval results refer to). "
            "Pass --force to replace it, or choose another --out"
        )
    if len(ratios) != 3:
        raise UserError("ratios: need three values (train, val, test)")

    # Pass 1: which stratum each line is in (tags as a sorted tuple when stratifying).
    strata_ids: dict[tuple[str, ...], int] = {}
    line_stratum = array("I")
    line_numbers = array("I")
    bar = progress_bar(None, "split: read", progress)
    for lineno, raw in iter_raw_lines(src):
        bar.update(1)
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno}); run `evalkit data validate` first", where=src, line=lineno) from None
        key: tuple[str, ...] = ()
        if stratify:
            tags = obj.get("tags") if isinstance(obj, dict) else None
            if isinstance(tags, str):
                tags = [tags]
            key = tuple(sorted(str(t) for t in tags)) if isinstance(tags, list) else ()
        sid = strata_ids.setdefault(key, len(strata_ids))
        line_stratum.append(sid)
        line_numbers.append(lineno)
    bar.close()
    n = len(line_stratum)
    if n == 0:
        raise DataError("no examples (the file is empty)", where=src)

    # Assign: a seeded permutation inside each stratum, cut by ratios.
    rng = np.random.default_rng(seed)
    strata = np.frombuffer(line_stratum, dtype=np.uint32) if n else np.zeros(0, np.uint32)
    assign = np.zeros(n, dtype=np.uint8)
    for _key, sid in sorted(strata_ids.items(), key=lambda kv: kv[0]):
        idx = np.nonzero(strata == sid)[0]
        perm = idx[rng.permutation(len(idx))]
        c = _allocate(len(idx), ratios)
        assign[perm[c[0] : c[0] + c[1]]] = 1
        assign[perm[c[0] + c[1] :]] = 2
    del strata

    # Pass 2: copy lines verbatim into their split files.
    files = {name: out / f"{name}.jsonl" for name, r in zip(SPLITS, ratios) if r > 0}
    out.mkdir(parents=True, exist_ok=True)
    counts = {name: 0 for name in files}
    heldout_hashes: dict[str, list[str]] = {name: [] for name in HELDOUT if name in files}
    lines_by_index = np.frombuffer(line_numbers, dtype=np.uint32)
    with ExitStack() as stack:  # every split file is renamed into place only if all were written
        handles = {name: stack.enter_context(atomic_writer(path)) for name, path in files.items()}
        i = 0
        bar = progress_bar(n, "split: write", progress)
        for lineno, raw in iter_raw_lines(src):
            if i >= n or lineno != lines_by_index[i]:
                continue
            name = SPLITS[assign[i]]
            i += 1
            bar.update(1)
            handles[name].write(raw if raw.endswith("\n") else raw + "\n")
            counts[name] += 1
            if name in heldout_hashes:
                heldout_hashes[name].append(example_hash(json.loads(raw)))
        bar.close()

    manifest = {
        "evalkit_split_manifest": MANIFEST_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": str(src), "sha256": file_sha256(src), "examples": n},
        "seed": seed,
        "ratios": dict(zip(SPLITS, [float(r) for r in ratios])),
        "stratify": "tags" if stratify else None,
        "strata": len(strata_ids),
        "splits": {
            name: {
                "file": path.name,
                "examples": counts[name],
                "sha256": file_sha256(path),
                "heldout": name in HELDOUT,
                **({"example_hashes": heldout_hashes[name]} if name in heldout_hashes else {}),
            }
            for name, path in files.items()
        },
    }
    write_json_atomic(manifest_path, manifest)
    return SplitResult(manifest_path, counts, files, len(strata_ids))


# --- frozen held-out check (called by the run stage) -------------------------------------------


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read split manifest: {e}", where=path) from None
    if not isinstance(data, dict) or "splits" not in data:
        raise DataError("not an evalkit split manifest (no 'splits')", where=path)
    return data


def find_manifest(suite_dir: Path, samples_path: Path, manifest_key: str | None) -> Path | None:
    """``manifest:`` from suite.yaml, else ``split.json`` beside suite.yaml, else beside the samples file."""
    if manifest_key:
        return suite_dir / manifest_key
    for cand in (suite_dir / MANIFEST_NAME, samples_path.parent / MANIFEST_NAME):
        if cand.is_file():
            return cand
    return None


def check_heldout(suite_path: Path) -> list[str]:
    """Warnings when a suite's samples file no longer matches the split manifest that froze it.

    ``suite_path``: a suite folder or its suite.yaml. No manifest (none named, none by convention):
    no warnings. Errors in suite.yaml itself are the suite loader's to report, so they give none here.
    """
    from ..config import SuiteConfig, load_model
    from ..errors import ConfigError

    suite_path = Path(suite_path)
    suite_yaml = suite_path if suite_path.suffix in (".yaml", ".yml") else suite_path / "suite.yaml"
    suite_dir = suite_yaml.parent
    try:
        cfg = load_model(SuiteConfig, suite_yaml)
    except ConfigError:
        return []
    samples = suite_dir / cfg.samples
    manifest_path = find_manifest(suite_dir, samples, cfg.manifest)
    if manifest_path is None:
        return []
    where = f"suite '{cfg.name}'"
    if not manifest_path.is_file():
        return [f"{where}: split manifest not found: {manifest_path} (named by 'manifest:' in {suite_yaml})"]
    try:
        manifest = _read_manifest(manifest_path)
    except DataError as e:
        return [f"{where}: {e.one_line()}"]
    if not samples.is_file():
        return [f"{where}: samples file not found: {samples}"]
    entry = _manifest_entry(manifest, manifest_path, samples)
    if entry is None:
        return [f"{where}: {samples} is not one of the files of split manifest {manifest_path}; it is not frozen by it"]
    name, info = entry
    if file_sha256(samples) == info.get("sha256"):
        return []
    detail = _describe_change(samples, info.get("example_hashes"))
    return [
        f"{where}: held-out file {samples} no longer matches split manifest {manifest_path} "
        f"(split '{name}'){': ' + detail if detail else ''}; results are not comparable with runs on the frozen split"
    ]


def _manifest_entry(manifest: dict, manifest_path: Path, samples: Path) -> tuple[str, dict] | None:
    splits = manifest.get("splits") or {}
    target = samples.resolve()
    for name, info in splits.items():
        if isinstance(info, dict) and (manifest_path.parent / str(info.get("file", ""))).resolve() == target:
            return name, info
    for name, info in splits.items():  # a copy of the split file elsewhere: match by name
        if isinstance(info, dict) and info.get("file") == samples.name:
            return name, info
    sha = file_sha256(samples)
    for name, info in splits.items():
        if isinstance(info, dict) and info.get("sha256") == sha:
            return name, info
    return None


def _describe_change(samples: Path, frozen: list[str] | None) -> str:
    if not frozen:
        return "content differs"
    current: list[str] = []
    for lineno, raw in iter_raw_lines(samples):
        if not raw.strip():
            continue
        try:
            current.append(example_hash(json.loads(raw)))
        except json.JSONDecodeError:
            current.append(f"bad-json-{lineno}")
    if current == frozen:
        return "formatting changed, the examples are the same"
    cur, old = set(current), set(frozen)
    parts = []
    added, removed = len(cur - old), len(old - cur)
    if added:
        parts.append(f"{added} example(s) added or edited")
    if removed:
        parts.append(f"{removed} frozen example(s) missing or edited")
    if not parts:
        parts.append("examples reordered or repeated")
    return ", ".join(parts) + f" ({len(current)} now, {len(frozen)} frozen)"
