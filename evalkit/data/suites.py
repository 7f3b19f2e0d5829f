"""Suites: a folder with suite.yaml + samples.jsonl (+ schema files), versioned by content hash."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from ..config import SuiteConfig, load_model, read_yaml
from ..errors import ConfigError
from ..types import Sample, ScorerSpec, Suite
from .jsonl import read_samples

# Options that name a file relative to the suite folder, by scorer kind.
_FILE_OPTION = {"json_schema": "schema"}
# The option a bare value stands for: {regex: "^a"} == {regex: {pattern: "^a"}}.
_SHORTHAND = {
    "json_schema": "schema",
    "regex": "pattern",
    "contains": "value",
    "not_contains": "value",
    "max_chars": "value",
    "python": "function",
    "exact_match": "normalize",
}


def _parse_scorer(entry: Any, idx: int, suite_yaml: Path, lines: dict) -> ScorerSpec:
    line = lines.get(("scorers", idx))
    if isinstance(entry, str):
        return ScorerSpec(kind=entry, name=entry, options={})
    if isinstance(entry, dict):
        name = entry.get("name")
        kinds = [k for k in entry if k != "name"]
        if len(kinds) != 1:
            raise ConfigError(
                f"scorers[{idx}]: one scorer kind per entry, got {kinds or 'none'}", where=suite_yaml, line=line
            )
        kind = kinds[0]
        value = entry[kind]
        if isinstance(value, dict):
            options = dict(value)
            name = options.pop("name", name)
        elif value is None:
            options = {}
        else:
            options = {_SHORTHAND.get(kind, "value"): value}
        return ScorerSpec(kind=kind, name=str(name or kind), options=options)
    raise ConfigError(f"scorers[{idx}]: expected a name or a mapping", where=suite_yaml, line=line)


def _load_json_file(path: Path, referrer: Path, line: int | None) -> Any:
    if not path.is_file():
        raise ConfigError(f"file not found: {path}", where=referrer, line=line)
    from ..config import read_json

    return read_json(path)


def _loglikelihood_scorers(scorers: list[ScorerSpec], samples: list[Sample], kind: str, suite_yaml: Path, lines: dict) -> list[ScorerSpec]:
    """A multiple-choice suite is scored by ``choice`` and ``choice_norm`` (both when it names none);
    a perplexity suite by its log-likelihood alone; neither scorer applies to generated text.
    """
    from ..scoring.loglikelihood import CHOICE_SCORERS

    multiple_choice = bool(samples) and bool(samples[0].choices)
    for i, spec in enumerate(scorers):
        line = lines.get(("scorers", i))
        if kind == "perplexity":
            raise ConfigError(f"scorers[{i}]: a perplexity suite has no scorers (it is measured by log-likelihood)", where=suite_yaml, line=line)
        if multiple_choice and spec.kind not in CHOICE_SCORERS:
            raise ConfigError(f"scorers[{i}]: '{spec.kind}' scores generated text; a multiple-choice suite is scored by "
                              f"{' / '.join(CHOICE_SCORERS)}", where=suite_yaml, line=line)
        if not multiple_choice and spec.kind in CHOICE_SCORERS:
            raise ConfigError(f"scorers[{i}]: '{spec.kind}' scores multiple-choice items (with 'choices'); this suite has none",
                              where=suite_yaml, line=line)
    if multiple_choice and not scorers:
        return [ScorerSpec(kind=k, name=k) for k in CHOICE_SCORERS]
    return scorers


def load_suite(folder: str | Path) -> Suite:
    """Load and validate a suite folder (or a suite.yaml path). Errors name file and line."""
    folder = Path(folder)
    suite_yaml = folder if folder.suffix in (".yaml", ".yml") else folder / "suite.yaml"
    folder = suite_yaml.parent
    if not suite_yaml.is_file():
        raise ConfigError("suite.yaml not found", where=suite_yaml)
    cfg = load_model(SuiteConfig, suite_yaml)
    _, lines = read_yaml(suite_yaml)

    from ..scoring.loglikelihood import CHOICE_SCORERS
    from ..scoring.validators import KNOWN_KINDS  # the kinds a suite may name

    digest = hashlib.sha256(suite_yaml.read_bytes())
    scorers = []
    names: set[str] = set()
    for i, entry in enumerate(cfg.scorers):
        spec = _parse_scorer(entry, i, suite_yaml, lines)
        line = lines.get(("scorers", i))
        if spec.kind not in KNOWN_KINDS and spec.kind not in CHOICE_SCORERS:
            raise ConfigError(
                f"scorers[{i}]: unknown scorer '{spec.kind}' (known: {', '.join(sorted(KNOWN_KINDS | set(CHOICE_SCORERS)))})",
                where=suite_yaml,
                line=line,
            )
        if spec.name in names:
            raise ConfigError(f"scorers[{i}]: two scorers named '{spec.name}'; give one a 'name:'", where=suite_yaml, line=line)
        names.add(spec.name)
        opt_key = _FILE_OPTION.get(spec.kind)
        if opt_key and isinstance(spec.options.get(opt_key), str):
            fpath = folder / spec.options[opt_key]
            schema = _load_json_file(fpath, suite_yaml, line)
            digest.update(fpath.read_bytes())
            spec = dataclasses.replace(spec, options={**spec.options, opt_key: schema, "schema_file": str(fpath)})
        scorers.append(spec)

    samples_path = folder / cfg.samples
    if not samples_path.is_file():
        raise ConfigError(f"samples file not found: {samples_path}", where=suite_yaml, line=lines.get(("samples",)))
    digest.update(samples_path.read_bytes())
    samples = read_samples(samples_path, suite_kind=cfg.kind)
    scorers = _loglikelihood_scorers(scorers, samples, cfg.kind, suite_yaml, lines)

    resolved: list[Sample] = []
    schema_cache: dict[str, Any] = {}
    for s in samples:
        if isinstance(s.schema, str):
            if s.schema not in schema_cache:
                fpath = folder / s.schema
                schema_cache[s.schema] = _load_json_file(fpath, samples_path, None)
                digest.update(fpath.read_bytes())
            s = dataclasses.replace(s, schema=schema_cache[s.schema])
        resolved.append(s)

    return Suite(
        name=cfg.name,
        kind=cfg.kind,
        samples=tuple(resolved),
        scorers=tuple(scorers),
        version=digest.hexdigest()[:16],
        path=str(folder),
    )
