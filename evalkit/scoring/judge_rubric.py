"""Judge rubrics (judges/*.yaml): loading, checking, rendering, verdict schemas and validation.

A rubric is data: a Jinja2 prompt over the prompt, the reference and the output(s), named criteria
with integer scales, and the JSON Schema a verdict must satisfy. Model output is untrusted text: it
goes into the prompt inside a delimited block (``<output>...</output>``), and any delimiter tag
inside the output is neutralised, so an output cannot close its own block and talk to the judge.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import ModelEntry, Strict, read_yaml, validation_error
from ..errors import ConfigError
from ..types import Message, Sample

Mode = Literal["single", "reference", "pairwise"]
Scoring = Literal["sampled", "expected"]

#: The variables a template sees. ``output`` (single/reference) or ``output_a``/``output_b`` (pairwise)
#: are untrusted; so are ``prompt`` and ``conversation`` (user data) and ``reference``.
TEMPLATE_VARS = ("prompt", "conversation", "messages", "reference", "output", "output_a", "output_b", "criteria", "tags", "metadata", "sample_id")
_UNTRUSTED = ("prompt", "conversation", "reference", "output", "output_a", "output_b")
_SENTINEL = "\u2063EVALKIT-{}-SENTINEL\u2063"
_WINNERS = ("A", "B", "tie")


class CriterionConfig(Strict):
    """One named criterion: an integer scale (``scale: [1, 5]``), what it means, anchor labels."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str = ""
    scale: tuple[int, int] = (1, 5)
    labels: dict[int, str] = Field(default_factory=dict)  # anchors: {1: "wrong", 5: "fully correct"}

    @model_validator(mode="after")
    def _check(self) -> "CriterionConfig":
        lo, hi = self.scale
        if lo >= hi:
            raise ValueError(f"criterion '{self.name}': scale must be [low, high] with low < high, got [{lo}, {hi}]")
        bad = [k for k in self.labels if not lo <= k <= hi]
        if bad:
            raise ValueError(f"criterion '{self.name}': labels {bad} fall outside the scale [{lo}, {hi}]")
        return self


class RubricConfig(Strict):
    """The file format of judges/*.yaml (unknown keys are errors)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    mode: Mode = "single"
    description: str = ""
    system: str = ""
    prompt: str
    criteria: list[CriterionConfig] = Field(default_factory=list)
    notes: bool = True  # the verdict carries a free-text "notes" field (single/reference)
    verdict_schema: dict[str, Any] | None = None  # default: generated from the criteria
    model: ModelEntry | None = None  # the judge model; eval.yaml's judges[].model overrides it
    temperature: float = Field(0.0, ge=0.0)
    max_tokens: int = Field(512, ge=16)
    verdict_retries: int = Field(2, ge=0)  # extra attempts when a verdict is not valid JSON / breaks the schema
    # sampled: the integer the judge wrote; expected: sum p(k)*k over the scale's tokens (G-Eval), from
    # the judge's log-probabilities where the endpoint returns them
    scoring: Scoring = "sampled"

    @model_validator(mode="after")
    def _check(self) -> "RubricConfig":
        if self.mode in ("single", "reference") and not self.criteria:
            raise ValueError(f"a {self.mode} rubric needs at least one criterion under 'criteria'")
        if self.scoring == "expected" and self.mode == "pairwise":
            raise ValueError("scoring: expected weighs a criterion's integer scale; a pairwise rubric has none (single and reference rubrics only)")
        return self

    @field_validator("criteria")
    @classmethod
    def _unique(cls, v: list[CriterionConfig]) -> list[CriterionConfig]:
        names = [c.name for c in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate names {dup}")
        if "notes" in names:
            raise ValueError("'notes' is reserved for the verdict's free-text field")
        return v


@dataclass(frozen=True)
class Criterion:
    name: str
    low: int
    high: int
    description: str = ""
    labels: Mapping[int, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Rubric:
    """A loaded, checked rubric. ``content_hash`` changes whenever the file does (it keys the cache)."""

    name: str
    mode: Mode
    path: str
    system: str
    prompt_template: str
    criteria: tuple[Criterion, ...]
    notes: bool
    verdict_schema: Mapping[str, Any] = field(hash=False, compare=False)
    model: ModelEntry | None = field(default=None, hash=False, compare=False)
    temperature: float = 0.0
    max_tokens: int = 512
    verdict_retries: int = 2
    content_hash: str = ""
    delimiters: tuple[str, ...] = ()  # tag names that wrap untrusted values in the template
    description: str = ""
    scoring: Scoring = "sampled"

    @property
    def criterion_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.criteria)

    def scorer_name(self, criterion: str | None = None) -> str:
        """``judge.<criterion>`` for the rubric named ``default``, else ``<name>.<criterion>``; pairwise: the name."""
        if self.mode == "pairwise" or criterion is None:
            return self.name
        prefix = "judge" if self.name == "default" else self.name
        return f"{prefix}.{criterion}"

    # --- rendering ----------------------------------------------------------------------------

    def render(self, sample: Sample, *, output: str | None = None, output_a: str | None = None, output_b: str | None = None) -> tuple[str, str]:
        """The (system, user) prompt for one judgment. Untrusted values have delimiters neutralised."""
        values = template_values(sample, output=output, output_a=output_a, output_b=output_b, criteria=self.criteria)
        for k in _UNTRUSTED:
            if isinstance(values.get(k), str):
                values[k] = neutralise(values[k], self.delimiters)
        values["messages"] = [{"role": m["role"], "content": neutralise(m["content"], self.delimiters)} for m in values["messages"]]
        user = _compiled(self.prompt_template).render(**values)
        system = _compiled(self.system).render(**values) if self.system else ""
        return system, user

    # --- verdicts -----------------------------------------------------------------------------

    def validate_verdict(self, verdict: Any) -> str | None:
        """None when ``verdict`` satisfies the rubric's schema, else what is wrong (one line)."""
        from jsonschema import Draft202012Validator

        v = Draft202012Validator(dict(self.verdict_schema))
        errs = sorted(v.iter_errors(verdict), key=lambda e: list(e.absolute_path))
        if errs:
            e = errs[0]
            where = "/".join(str(p) for p in e.absolute_path) or "(verdict)"
            return f"verdict breaks the schema at {where}: {e.message}"
        if self.mode == "pairwise":
            if verdict.get("winner") not in _WINNERS:
                return f"verdict 'winner' must be one of {list(_WINNERS)}"
        else:
            for c in self.criteria:
                val = verdict.get(c.name)
                if isinstance(val, bool) or not isinstance(val, (int, float)) or float(val) != int(val):
                    return f"verdict '{c.name}' must be an integer, got {val!r}"
                if not c.low <= val <= c.high:
                    return f"verdict '{c.name}' = {val} is outside the scale [{c.low}, {c.high}]"
        return None


@functools.lru_cache(maxsize=64)
def _compiled(text: str) -> Any:
    """Compile a template once (a sandbox: a rubric cannot reach Python internals; no autoescape: it is a prompt, not HTML)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(autoescape=False, undefined=StrictUndefined).from_string(text)


def template_values(sample: Sample, *, output: str | None, output_a: str | None, output_b: str | None, criteria: tuple[Criterion, ...]) -> dict[str, Any]:
    msgs = sample.messages_as_dicts()
    return {
        "prompt": sample.prompt_text,
        "conversation": "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in msgs),
        "messages": msgs,
        "reference": sample.reference,
        "output": output,
        "output_a": output_a,
        "output_b": output_b,
        "criteria": [{"name": c.name, "low": c.low, "high": c.high, "description": c.description, "labels": dict(c.labels)} for c in criteria],
        "tags": list(sample.tags),
        "metadata": dict(sample.metadata),
        "sample_id": sample.id,
    }


def neutralise(text: str, tags: tuple[str, ...]) -> str:
    """Defuse delimiter tags inside untrusted text: ``</output>`` becomes ``&lt;/output>``.

    The judge still reads what the model wrote, but the text cannot end its block early or open a
    new one.
    """
    if not text or not tags:
        return text
    pattern = re.compile(r"<(\s*/?\s*)(" + "|".join(re.escape(t) for t in tags) + r")\b", re.IGNORECASE)
    return pattern.sub(lambda m: "&lt;" + m.group(1) + m.group(2), text)


# --- schemas ---------------------------------------------------------------------------------


def default_verdict_schema(mode: Mode, criteria: list[CriterionConfig] | tuple[Criterion, ...], notes: bool) -> dict[str, Any]:
    """The schema evalkit asks for when a rubric names none (valid for OpenAI strict mode too)."""
    if mode == "pairwise":
        props: dict[str, Any] = {"winner": {"type": "string", "enum": list(_WINNERS), "description": "A, B, or tie"}}
        props["reason"] = {"type": "string", "description": "one or two sentences"}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    props = {}
    for c in criteria:
        lo, hi = (c.scale if isinstance(c, CriterionConfig) else (c.low, c.high))
        props[c.name] = {"type": "integer", "minimum": lo, "maximum": hi}
        if c.description:
            props[c.name]["description"] = c.description
    if notes:
        props["notes"] = {"type": "string", "description": "a short justification"}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _check_schema(cfg: RubricConfig, schema: dict[str, Any]) -> str | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        return f"verdict_schema is not a valid JSON Schema: {e.message}"
    if schema.get("type") != "object":
        return "verdict_schema must describe an object (type: object)"
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    needed = ["winner"] if cfg.mode == "pairwise" else [c.name for c in cfg.criteria]
    for n in needed:
        if n not in props or n not in required:
            return f"verdict_schema must list '{n}' under properties and required"
    return None


# --- loading ---------------------------------------------------------------------------------


_REQUIRED_VARS: dict[str, tuple[str, ...]] = {
    "single": ("output",),
    "reference": ("output", "reference"),
    "pairwise": ("output_a", "output_b"),
}


def _delimiter_for(rendered: str, var: str) -> str | None:
    """The tag name wrapping the sentinel of ``var`` in a rendered template, if it is wrapped."""
    s = re.escape(_SENTINEL.format(var))
    m = re.search(r"<([A-Za-z_][\w\-]*)[^<>]*>\s*" + s + r"\s*</\1\s*>", rendered)
    return m.group(1) if m else None


def load_rubric(path: str | Path) -> Rubric:
    """Read and check one rubric file; every error names the file and line."""
    from jinja2 import StrictUndefined, TemplateSyntaxError, meta
    from jinja2.exceptions import SecurityError, UndefinedError
    from jinja2.sandbox import SandboxedEnvironment

    p = Path(path)
    data, lines = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError("a rubric is a mapping (name, mode, prompt, criteria, ...)", where=p, line=1)
    try:
        cfg = RubricConfig.model_validate(data)
    except ValidationError as err:
        e = validation_error(err, p, lines)
        if e.line is None:  # a whole-file rule: point at the top of the file
            e = ConfigError(e.message, where=p, line=1)
        raise e from None

    def line_of(key: str) -> int | None:
        return lines.get((key,))

    env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
    for key, text in (("prompt", cfg.prompt), ("system", cfg.system)):
        try:
            ast = env.parse(text)
        except TemplateSyntaxError as e:
            base = line_of(key)
            line = base
            if base is not None and e.lineno:
                # a block scalar (prompt: |) starts on the line after its key; an inline one on the key's line
                key_line = p.read_text(encoding="utf-8").splitlines()[base - 1].rstrip()
                block = re.search(r":\s*[|>][-+0-9]*\s*(#.*)?$", key_line) is not None
                line = base + e.lineno if block else base + e.lineno - 1
            raise ConfigError(f"{key}: Jinja2 syntax error: {e.message}", where=p, line=line) from None
        unknown = sorted(meta.find_undeclared_variables(ast) - set(TEMPLATE_VARS))
        if unknown:
            raise ConfigError(f"{key}: unknown template variable(s) {unknown}; known: {list(TEMPLATE_VARS)}", where=p, line=line_of(key))
        if key == "prompt":
            used = meta.find_undeclared_variables(ast)
            missing = [v for v in _REQUIRED_VARS[cfg.mode] if v not in used]
            if missing:
                raise ConfigError(f"prompt: a {cfg.mode} rubric must place {missing} in the prompt", where=p, line=line_of(key))

    schema = cfg.verdict_schema or default_verdict_schema(cfg.mode, cfg.criteria, cfg.notes)
    problem = _check_schema(cfg, schema)
    if problem:
        raise ConfigError(problem, where=p, line=line_of("verdict_schema") or line_of("criteria"))

    criteria = tuple(Criterion(c.name, c.scale[0], c.scale[1], c.description, dict(c.labels)) for c in cfg.criteria)
    # Render once with sentinels: the template must work on a sample, and every output must sit in a delimited block.
    sentinels = {v: _SENTINEL.format(v) for v in ("output", "output_a", "output_b")}
    probe = Sample(id="probe", messages=(Message("user", "prompt text"),), reference="reference text")
    try:
        vals = template_values(probe, criteria=criteria, **sentinels)
        rendered = env.from_string(cfg.prompt).render(**vals)
    except (UndefinedError, SecurityError, TypeError, ValueError) as e:
        raise ConfigError(f"prompt: cannot render the template: {e}", where=p, line=line_of("prompt")) from None
    delimiters: list[str] = []
    for var in _REQUIRED_VARS[cfg.mode]:
        if var == "reference":
            continue
        tag = _delimiter_for(rendered, var)
        if tag is None:
            raise ConfigError(
                f"prompt: put {{{{ {var} }}}} alone inside a delimited block, e.g. <{var}>\\n{{{{ {var} }}}}\\n</{var}> "
                "(model output is untrusted; the block keeps it apart from the instructions)",
                where=p,
                line=line_of("prompt"),
            )
        delimiters.append(tag)
    for tag in re.findall(r"</([A-Za-z_][\w\-]*)\s*>", rendered):
        if tag not in delimiters:
            delimiters.append(tag)
    content = p.read_bytes()
    return Rubric(
        name=cfg.name,
        mode=cfg.mode,
        path=str(p),
        system=cfg.system,
        prompt_template=cfg.prompt,
        criteria=criteria,
        notes=cfg.notes,
        verdict_schema=schema,
        model=cfg.model,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        verdict_retries=cfg.verdict_retries,
        content_hash=hashlib.sha256(content).hexdigest()[:16],
        delimiters=tuple(delimiters),
        description=cfg.description,
        scoring=cfg.scoring,
    )


def parse_verdict_text(text: str) -> Any:
    """Parse a reply that should be one JSON object; tolerate a ```json fence around it. Raises ValueError."""
    t = text.strip()
    m = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", t, flags=re.DOTALL)
    if m:
        t = m.group(1)
    try:
        return json.loads(t)
    except json.JSONDecodeError as e:
        raise ValueError(f"reply is not valid JSON ({e.msg} at char {e.pos})") from None


def scorer_scale(judges: Mapping[str, Any], scorer: str) -> tuple[float, float] | None:
    """The scale of judge scorer ``scorer`` from a run's judge statistics (summary.json's ``judges``,
    whose ``rubric_path`` names each rubric file); None when no readable rubric names it.
    """
    from ..errors import UserError

    for st in judges.values():
        path = st.get("rubric_path") if isinstance(st, Mapping) else getattr(st, "rubric_path", None)
        if not path:
            continue
        try:
            rubric = load_rubric(path)
        except (UserError, OSError):
            continue
        for c in rubric.criteria:
            if rubric.scorer_name(c.name) == scorer:
                return float(c.low), float(c.high)
    return None
