"""What a local model loads, identified: weight and adapter fingerprints, a checkpoint's dtype."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import UserError
from ..types import ModelSpec

__all__ = ["checkpoint_dtype", "fingerprint", "hash_dir"]


def hash_dir(path: Path, *, full: bool) -> str:
    """Fingerprint a checkpoint or adapter directory.

    ``full``: hash every byte (adapters are small). Otherwise (base weights, possibly many GB): hash
    names, sizes and the first and last MiB of each file, which changes whenever the weights do.
    """
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for f in files:
        rel = f.relative_to(path).as_posix()
        if rel.startswith(("checkpoint-", "runs/")) or rel in ("candidate.json", "README.md", "trainer_state.json", "training_args.bin"):
            continue  # training by-products do not change outputs
        size = f.stat().st_size
        h.update(f"{rel}:{size}\n".encode())
        with f.open("rb") as fh:
            if full or size <= 2 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


_KNOWN_DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16", "half": "float16"}


def checkpoint_dtype(path: str | Path) -> str:
    """The dtype a checkpoint's config.json declares (``dtype`` or the older ``torch_dtype``).

    Without one, float32: what transformers computes in. Every backend serving the base gets this
    dtype, so hf and vLLM do the same arithmetic by default (vLLM on its own picks bfloat16 for a
    float32 checkpoint, and greedy outputs then differ).
    """
    import json

    conf = Path(path) / "config.json"
    try:
        data = json.loads(conf.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    for key in ("dtype", "torch_dtype"):
        v = data.get(key) if isinstance(data, dict) else None
        if isinstance(v, str) and v.removeprefix("torch.") in _KNOWN_DTYPES:
            return _KNOWN_DTYPES[v.removeprefix("torch.")]
    text_conf = data.get("text_config") if isinstance(data, dict) else None
    if isinstance(text_conf, dict):
        for key in ("dtype", "torch_dtype"):
            v = text_conf.get(key)
            if isinstance(v, str) and v.removeprefix("torch.") in _KNOWN_DTYPES:
                return _KNOWN_DTYPES[v.removeprefix("torch.")]
    return "float32"


def fingerprint(spec: ModelSpec) -> str:
    """The identity of what a spec loads: weights (and adapter) fingerprints, or the API model name."""
    parts = []
    if spec.path:
        p = Path(spec.path)
        if not p.is_dir():
            raise UserError(f"model '{spec.name}': checkpoint directory not found: {spec.path}")
        parts.append(hash_dir(p, full=False))
    if spec.adapter:
        a = Path(spec.adapter)
        if not (a / "adapter_config.json").is_file():
            raise UserError(f"model '{spec.name}': no adapter_config.json in adapter directory {spec.adapter}")
        parts.append(hash_dir(a, full=True))
    if spec.model:
        parts.append(spec.model)
    return "+".join(parts)


def chat_template_hash(path: str | Path | None) -> str | None:
    """A short hash of the chat template a checkpoint folder serves with (``chat_template.jinja``, else
    ``tokenizer_config.json``'s ``chat_template``; a named list: its ``default``), read without
    transformers; None when the folder has none. Training records it in candidate.json; a run that
    serves the candidate with another template warns (and a ``template_match`` gate fails).
    """
    if path is None:
        return None
    folder = Path(path).expanduser()
    text: str | None = None
    jinja = folder / "chat_template.jinja"
    try:
        if jinja.is_file():
            text = jinja.read_text(encoding="utf-8")
        elif (folder / "tokenizer_config.json").is_file():
            import json

            tmpl = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
            if isinstance(tmpl, list):
                tmpl = next((t.get("template") for t in tmpl if isinstance(t, dict) and t.get("name") == "default"), None)
            text = tmpl if isinstance(tmpl, str) else None
    except (OSError, ValueError):
        return None
    return template_text_hash(text) if text else None


def template_text_hash(text: str) -> str:
    """The hash of a chat template's text (what :func:`chat_template_hash` gives for a folder holding it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
