"""The hf backend: transformers + peft, several LoRA adapters on one loaded base.

One ``HFBackend`` serves every ModelSpec of a group that shares a base checkpoint (see
``models.group_key``): the base is loaded once, each distinct adapter is loaded beside it with peft
(``PeftModel.from_pretrained`` for the first, ``load_adapter`` for the rest), and each batch runs
with its own adapter active (requests are grouped by adapter; the base runs with adapters
disabled). Prompts go through the tokenizer's chat template with ``add_generation_prompt=True``,
the same template training used. Decoding is greedy when temperature is 0.

Batches are left-padded with an attention mask, and transformers derives position ids from the
mask, so a prompt gives the same tokens alone or in a batch (tested in float32). Each batch decodes
with a KV cache allocated once for its final length (``models/kvcache.py``), which gives
transformers' tokens without copying the cache at every step.

``latency_s`` of a completion is its share of the batch's wall time (batch time / batch size), so
latencies add up to the time spent generating.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import BackendUnavailable, ConfigError
from ..types import Completion, GenerationParams, ModelSpec, TokenLogprob
from .base import GenerationRequest, LoglikelihoodRequest, ProgressFn

__all__ = ["HFBackend"]

BASE_ADAPTER = "__base__"  # the name a request without adapter runs under
_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class _Prepared:
    index: int  # position in the caller's request list
    adapter: str  # adapter name, or BASE_ADAPTER
    params: GenerationParams
    ids: tuple[int, ...]
    batch_size: int
    top_logprobs: int = 0


class HFBackend:
    """A transformers model (optionally 4-bit) with zero or more peft adapters, for specs that share
    one base ``path``. Options read from ``spec.options``: ``dtype`` (auto|float32|bfloat16|float16),
    ``load_in_4bit``, ``batch_size`` (default 8), ``device`` (default: cuda when available, else cpu).
    """

    def __init__(self, specs: Sequence[ModelSpec]):
        if not specs:
            raise ValueError("HFBackend needs at least one ModelSpec")
        paths = {s.path for s in specs}
        if len(paths) != 1 or None in paths:
            raise ValueError(f"HFBackend serves specs that share one base path, got {sorted(map(str, paths))}")
        self.specs = tuple(specs)
        self.path = Path(str(specs[0].path)).expanduser()
        opts = dict(specs[0].options)
        self.dtype_name = str(opts.get("dtype") or "auto")
        if self.dtype_name not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got '{self.dtype_name}'", where=f"models.{specs[0].name}.dtype")
        self.load_in_4bit = bool(opts.get("load_in_4bit", False))
        self.auto_batch = opts.get("batch_size") == "auto"
        self.batch_size = 8 if self.auto_batch else int(opts.get("batch_size") or 8)
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1, or auto", where=f"models.{specs[0].name}.batch_size")
        self._device_opt = opts.get("device")
        # Decode with a KV cache preallocated per batch (models/kvcache.py): the same tokens as
        # transformers' DynamicCache without its per-step copy of every cached position.
        self.growing_cache = True
        # Greedy groups larger than a batch decode with continuous batching (_generate_continuous):
        # a row that ends hands its slot to the next prompt at once instead of idling to the batch's end.
        self.continuous_batching = True
        self._adapter_names: dict[str, str] = {}  # resolved adapter dir -> peft adapter name
        self.model: Any = None
        self.tokenizer: Any = None
        self._load()

    # ---------------------------------------------------------------- loading

    def _load(self) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            from ..errors import missing_extra

            raise missing_extra("the hf backend", "hf", e) from None

        if not (self.path / "config.json").is_file():
            what = "directory not found" if not self.path.is_dir() else "no config.json in checkpoint directory"
            raise BackendUnavailable(f"cannot load hf model: {what}", where=self.path)
        self.device = self._device_opt or ("cuda" if torch.cuda.is_available() else "cpu")

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path)
        except Exception as e:  # noqa: BLE001 - any loader failure is "cannot load", with the cause
            raise BackendUnavailable(f"cannot load tokenizer: {_short(e)}", where=self.path) from e
        if not getattr(tokenizer, "chat_template", None):
            raise BackendUnavailable("the tokenizer has no chat template (tokenizer_config.json / chat_template.jinja)", where=self.path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer

        kwargs: dict[str, Any] = {"dtype": self.dtype_name if self.dtype_name == "auto" else getattr(torch, self.dtype_name)}
        if self.load_in_4bit:
            from transformers import BitsAndBytesConfig

            compute = torch.bfloat16 if self.dtype_name in ("auto", "float32") else getattr(torch, self.dtype_name)
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute,
            )
            kwargs["device_map"] = self.device
        try:
            model = AutoModelForCausalLM.from_pretrained(self.path, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailable(f"cannot load model: {_short(e)}", where=self.path) from e
        if not self.load_in_4bit:
            model.to(self.device)

        adapters: list[str] = []
        for spec in self.specs:
            if spec.adapter:
                key = str(Path(spec.adapter).expanduser().resolve())
                if key not in self._adapter_names:
                    self._adapter_names[key] = f"a{len(self._adapter_names)}"
                    adapters.append(key)
        if adapters:
            try:
                from peft import PeftModel
            except ImportError as e:  # pragma: no cover
                from ..errors import missing_extra

                raise missing_extra("LoRA adapters on the hf backend", "hf", e) from None
            for i, adir in enumerate(adapters):
                if not (Path(adir) / "adapter_config.json").is_file():
                    raise BackendUnavailable("cannot load adapter: no adapter_config.json", where=adir)
                name = self._adapter_names[adir]
                try:
                    if i == 0:
                        model = PeftModel.from_pretrained(model, adir, adapter_name=name)
                    else:
                        model.load_adapter(adir, adapter_name=name)
                except Exception as e:  # noqa: BLE001 - e.g. an adapter trained on another base
                    raise BackendUnavailable(f"cannot load adapter on base {self.path}: {_short(e)}", where=adir) from e
        model.eval()
        self.model = model
        self._eos_ids = _eos_ids(model, tokenizer)
        self._max_positions = getattr(model.config, "max_position_embeddings", None)
        self._auto_sizes: dict[int, int] = {}  # sequence length -> the batch size auto found for it

    def adapter_name(self, spec: ModelSpec) -> str:
        """The peft adapter name a spec runs under (``__base__`` for no adapter)."""
        if not spec.adapter:
            return BASE_ADAPTER
        key = str(Path(spec.adapter).expanduser().resolve())
        if key not in self._adapter_names:
            raise ValueError(f"adapter {spec.adapter} was not loaded by this backend (spec {spec.name})")
        return self._adapter_names[key]

    # ---------------------------------------------------------------- batch size

    def _rows(self, spec: ModelSpec, seq_len: int) -> int:
        """The batch size for a request of ``spec``: its own, or with ``auto`` the one found for its length."""
        opt = dict(spec.options).get("batch_size")
        if opt == "auto" or (opt is None and self.auto_batch):
            return self.auto_batch_size(seq_len)
        return int(opt or self.batch_size)

    def auto_batch_size(self, seq_len: int) -> int:
        """``batch_size: auto``: the largest batch (at most 64) whose KV cache and activations for sequences
        of ``seq_len`` tokens fit in a quarter of the free memory of the device (GPU: free CUDA memory;
        CPU: available RAM), computed from the model's shape once per length bucket, no trial runs.
        On a CPU, decoding reads every weight once per step whatever the batch, so more rows per batch is
        nearly free throughput until memory or compute binds.
        """
        bucket = 1 << max(6, (max(1, seq_len) - 1).bit_length())  # 64, 128, 256, ... tokens
        if bucket in self._auto_sizes:
            return self._auto_sizes[bucket]
        cfg = self.model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
        hidden = int(getattr(cfg, "hidden_size", 0) or 0)
        heads = int(getattr(cfg, "num_attention_heads", 1) or 1)
        kv_heads = int(getattr(cfg, "num_key_value_heads", heads) or heads)
        head_dim = int(getattr(cfg, "head_dim", 0) or (hidden // max(1, heads)))
        vocab = int(getattr(cfg, "vocab_size", 0) or 0)
        width = 2 if self.dtype_name in ("bfloat16", "float16") or self.load_in_4bit else 4
        per_row = bucket * (2 * layers * kv_heads * head_dim * width + 8 * hidden * width) + bucket * vocab * 4  # KV + activations + logits
        free = _free_memory(str(getattr(self, "device", "cpu")))
        size = 64
        if per_row > 0 and free:
            size = max(1, min(64, int(free * 0.25 // per_row)))
        self._auto_sizes[bucket] = size
        return size

    # ---------------------------------------------------------------- generation

    def prompt_ids(self, messages: Sequence[Any]) -> list[int]:
        """The token ids a prompt is generated from: chat template + generation prompt."""
        msgs = [m.as_dict() if hasattr(m, "as_dict") else dict(m) for m in messages]
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        # The template already holds bos/role markers: add nothing else (as vLLM does for chat).
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[Completion]:
        if self.model is None:
            raise RuntimeError("HFBackend is closed")
        results: list[Completion | None] = [None] * len(requests)
        prepared: list[_Prepared] = []
        for i, req in enumerate(requests):
            ids = self.prompt_ids(req.messages)
            if self._max_positions and len(ids) >= self._max_positions:
                results[i] = Completion(
                    text="",
                    tokens_in=len(ids),
                    error=f"prompt is {len(ids)} tokens; the model's context is {self._max_positions}",
                )
                continue
            batch_size = self._rows(req.model, len(ids) + req.model.generation.max_new_tokens)
            prepared.append(_Prepared(i, self.adapter_name(req.model), req.model.generation, tuple(ids), batch_size, req.top_logprobs))
        if progress and len(prepared) < len(requests):
            progress(len(requests) - len(prepared))

        # Group by (adapter, generation params); inside a group, similar lengths share a batch. Sampled
        # requests that differ only in their seed (an item's K samples: seed + k) share batches too:
        # each row draws its own tokens from the batch's generator, seeded from the rows' seeds.
        groups: dict[tuple[str, GenerationParams, int], list[_Prepared]] = {}
        for p in prepared:
            params = dataclasses.replace(p.params, seed=0) if p.params.temperature > 0 else p.params
            groups.setdefault((p.adapter, params, p.top_logprobs), []).append(p)
        for (adapter, params, top), items in groups.items():
            items = sorted(items, key=lambda p: (len(p.ids), p.params.seed))
            size = max(1, min(p.batch_size for p in items))
            if self.continuous_batching and len(items) > size and params.temperature == 0 and not top:
                done = self._generate_continuous(adapter, params, items, size, progress)
                if done is not None:
                    for p, completion in zip(items, done):
                        results[p.index] = completion
                    continue
            for start in range(0, len(items), size):
                batch = items[start : start + size]
                batch_params = dataclasses.replace(params, seed=_batch_seed(p.params.seed for p in batch)) if params.temperature > 0 else params
                for p, completion in zip(batch, self._generate_batch(adapter, batch_params, batch, top)):
                    results[p.index] = completion
                if progress:
                    progress(len(batch))
        return [r for r in results if r is not None]

    def _generate_batch(self, adapter: str, params: GenerationParams, batch: list[_Prepared], top_logprobs: int = 0) -> list[Completion]:
        import contextlib

        import torch
        from transformers import GenerationConfig

        pad = self.tokenizer.pad_token_id
        width = max(len(p.ids) for p in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, p in enumerate(batch):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(p.ids) :] = torch.tensor(p.ids, dtype=torch.long)
            attention[row, width - len(p.ids) :] = 1

        # A fresh GenerationConfig: only what the spec asks for, never the checkpoint's defaults
        # (a repetition_penalty in generation_config.json would silently change outputs).
        sampling = params.temperature > 0
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sampling,
            "eos_token_id": list(self._eos_ids),
            "pad_token_id": pad,
        }
        if sampling:
            gen_kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            gen_kwargs["stop_strings"] = list(params.stop)
        config = GenerationConfig(**gen_kwargs)

        if adapter == BASE_ADAPTER:
            ctx = self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else contextlib.nullcontext()
        else:
            self.model.set_adapter(adapter)
            ctx = contextlib.nullcontext()
        if sampling:
            torch.manual_seed(params.seed)
        device = getattr(self.model, "device", self.device)
        extra: dict[str, Any] = {"output_scores": True, "return_dict_in_generate": True} if top_logprobs else {}
        if self.growing_cache:
            from .kvcache import growing_cache

            cache = growing_cache(self.model, width + params.max_new_tokens)
            if cache is not None:
                extra["past_key_values"] = cache
        t0 = time.perf_counter()
        with torch.inference_mode(), ctx:
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=config,
                tokenizer=self.tokenizer if params.stop else None,
                **extra,
            )
        elapsed = time.perf_counter() - t0
        sequences = out.sequences if top_logprobs else out
        new_tokens = sequences[:, width:].tolist()
        done = [self._completion(row_ids, len(p.ids), params, elapsed / len(batch)) for p, row_ids in zip(batch, new_tokens)]
        if not top_logprobs:
            return done

        return [dataclasses.replace(c, logprobs=self._logprobs(out.scores, row, new_tokens[row][: c.tokens_out], top_logprobs)) for row, c in enumerate(done)]

    def _generate_continuous(self, adapter: str, params: GenerationParams, items: list[_Prepared], size: int,
                             progress: ProgressFn | None) -> list[Completion] | None:
        """Greedy decoding of ``items`` with at most ``size`` rows in flight (continuous batching), or None
        when this model's cache cannot take it (then static batches run).

        Prompts go longest first. The first ``size`` are prefilled as one left-padded batch; at every step
        a row that ends (an eos id, ``max_new_tokens``, a stop string) is replaced by the next prompt:
        the newcomers are prefilled together on a cache of their own, and their keys and values are
        written, right-aligned, into the freed rows of the running cache (the positions before them
        zeroed and masked out). Positions come from each row's own tokens, so a prompt decodes exactly as
        in a static batch (the same left-padding invariance static batches rely on; tested item for
        item on the demo). When no prompt is left, ended rows leave the batch, and columns that every
        row masks are trimmed from the front. No row ever decodes past its own end.
        """
        import torch

        from .kvcache import _GrowingLayer, growing_cache

        queue = sorted(items, key=lambda p: -len(p.ids))
        width = len(queue[0].ids)
        cache = growing_cache(self.model, width + params.max_new_tokens + 64)
        if cache is None or not all(isinstance(layer, _GrowingLayer) for layer in cache.layers):
            return None
        device = getattr(self.model, "device", self.device)
        pad = self.tokenizer.pad_token_id
        stops = [x for x in params.stop if x]
        position = {p.index: i for i, p in enumerate(items)}
        out: list[Completion | None] = [None] * len(items)
        t0 = time.perf_counter()

        def prefill(batch: list[_Prepared], past: Any) -> tuple[Any, Any]:
            w = max(len(p.ids) for p in batch)
            ids = torch.full((len(batch), w), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), w), dtype=torch.long)
            for row, p in enumerate(batch):
                ids[row, w - len(p.ids):] = torch.tensor(p.ids, dtype=torch.long)
                mask[row, w - len(p.ids):] = 1
            pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), past_key_values=past,
                                use_cache=True, logits_to_keep=1, cache_position=torch.arange(w, device=device)).logits
            return logits[:, -1, :].float().argmax(-1).cpu(), mask

        rows: list[_Prepared] = queue[:size]
        queue = queue[size:]
        new: list[list[int]] = [[] for _ in rows]

        def accept(r: int, tok: int) -> bool:
            """Record row r's next token; True (and its completion written) when the row has ended."""
            new[r].append(tok)
            if tok in self._eos_ids or len(new[r]) >= params.max_new_tokens or (
                    stops and any(x in self.tokenizer.decode(new[r], skip_special_tokens=True) for x in stops)):
                out[position[rows[r].index]] = self._completion(new[r], len(rows[r].ids), params, 0.0)
                return True
            return False

        with torch.inference_mode(), self._adapter_context(adapter):
            toks, mask = prefill(rows, cache)
            ended = [r for r, tok in enumerate(toks.tolist()) if accept(r, tok)]
            while True:
                if progress and ended:
                    progress(len(ended))
                while ended and queue:  # the next prompts take the ended rows' places
                    coming, queue = queue[: len(ended)], queue[len(ended):]
                    slots, ended = ended[: len(coming)], ended[len(coming):]
                    past = type(cache)(config=self.model.config)
                    first, cmask = prefill(coming, past)
                    # Longest first: every running row's prompt is at least as long as a newcomer's, and
                    # trimming keeps every row's tokens, so the newcomers fit in the columns held (w <= held).
                    w, held = cmask.shape[1], mask.shape[1]
                    index = torch.tensor(slots, device=device)
                    for layer, theirs in zip(cache.layers, past.layers):
                        for mine, src in ((layer.keys, theirs.keys), (layer.values, theirs.values)):
                            mine[index, :, : held - w] = 0
                            mine[index, :, held - w:] = src.to(mine.dtype)
                    mask[slots] = 0
                    mask[slots, held - w:] = cmask
                    for j, r in enumerate(slots):
                        rows[r], new[r] = coming[j], []
                        toks[r] = first[j]
                    again = [r for r, tok in zip(slots, first.tolist()) if accept(r, tok)]
                    if progress and again:
                        progress(len(again))
                    ended += again
                if ended:  # nothing left to start: the ended rows leave the batch
                    keep = [r for r in range(len(rows)) if r not in set(ended)]
                    if not keep:
                        break
                    cache.batch_select_indices(torch.tensor(keep, device=device))
                    rows, new, toks, mask = [rows[r] for r in keep], [new[r] for r in keep], toks[keep], mask[keep]
                lead = int((mask.cumsum(-1) == 0).sum(-1).min())  # columns every row masks
                if lead >= 32:
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]
                    mask = mask[:, lead:]
                toks, mask = self._decode_step(cache, toks, mask)
                ended = [r for r, tok in enumerate(toks.tolist()) if accept(r, tok)]
        elapsed = time.perf_counter() - t0
        return [dataclasses.replace(c, latency_s=elapsed / len(items)) for c in out if c is not None]

    def _decode_step(self, cache: Any, nxt: Any, mask: Any) -> tuple[Any, Any]:
        """One greedy step of every row: feed each row's last token, return (next tokens, the grown mask).

        With sdpa or eager attention the step gets its 4-D additive mask ready-made (0 where a row
        attends, -inf where it is padding: the float mask sdpa would convert transformers' boolean one
        into, layer by layer), which saves building and converting it at every layer: the same
        numbers, 3-4 % of a step on a CPU. Other attention kernels get the 2-D mask.
        """
        import torch

        device = getattr(self.model, "device", self.device)
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype)], dim=1)
        pos = (mask.sum(-1, keepdim=True) - 1)
        held = mask.shape[1] - 1
        attention: Any = mask
        if getattr(self.model.config, "_attn_implementation", None) in ("sdpa", "eager"):
            dtype = getattr(self.model, "dtype", torch.float32)
            attention = torch.zeros((mask.shape[0], 1, 1, mask.shape[1]), dtype=dtype).masked_fill_((mask == 0)[:, None, None, :], float("-inf"))
        logits = self.model(input_ids=nxt.view(-1, 1).to(device), attention_mask=attention.to(device), position_ids=pos.to(device), past_key_values=cache,
                            use_cache=True, cache_position=torch.arange(held, held + 1, device=device)).logits
        return logits[:, -1, :].float().argmax(-1).cpu(), mask

    def _logprobs(self, scores: Sequence[Any], row: int, ids: list[int], k: int) -> tuple[TokenLogprob, ...]:
        """Each generated token of one row with its top-k log-probabilities (from the step's scores).

        A token's text is what it adds to the decoded reply (decoded prefixes, so byte-level and
        sentencepiece tokenizers both spell the reply exactly); the alternatives are decoded alone.
        """
        import torch

        out: list[TokenLogprob] = []
        prev = ""
        for step, tid in enumerate(ids):
            lp = torch.log_softmax(scores[step][row].float(), dim=-1)
            top = torch.topk(lp, k)
            text = self.tokenizer.decode(ids[: step + 1], skip_special_tokens=True)
            piece, prev = text[len(prev):], text
            alts = tuple((self.tokenizer.decode([int(i)], skip_special_tokens=True), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist()))
            out.append(TokenLogprob(piece, float(lp[tid]), alts))
        return tuple(out)

    def _completion(self, new_ids: list[int], tokens_in: int, params: GenerationParams, latency: float) -> Completion:
        ended = False
        for k, t in enumerate(new_ids):
            if t in self._eos_ids:
                new_ids, ended = new_ids[: k + 1], True
                break
        if not ended:  # rows that stopped early (stop string) are padded to the batch's length
            pad = self.tokenizer.pad_token_id
            while new_ids and new_ids[-1] == pad:
                new_ids = new_ids[:-1]
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in params.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text, ended = text[:cut], True
        return Completion(
            text=text,
            finish_reason="stop" if ended else "length",
            tokens_in=tokens_in,
            tokens_out=len(new_ids),
            latency_s=latency,
        )

    # ---------------------------------------------------------------- log-likelihood

    @property
    def max_length(self) -> int:
        """The context window log-likelihoods are scored in (lm-eval's ``max_length``)."""
        return int(self._max_positions or 2048)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], progress: ProgressFn | None = None) -> list[Completion]:
        """Each request's summed log-probabilities: one per continuation, or the rolling total of a text.

        A multiple-choice item's context is computed once for all its choices: a batch of contexts
        runs with a KV cache, the cache is repeated per choice, and the choices run on it (the same
        tokens lm-eval scores as one row per choice, a fraction of the work). Rolling windows, and
        pairs that overflow the context window, are rows of their own. Batches are left-padded
        (positions from the mask), longest first, one adapter each; only positions that predict a
        scored token go through the output head.
        """
        from . import loglik

        if self.model is None:
            raise RuntimeError("HFBackend is closed")
        rows: list[tuple[int, str, list[int], list[int], int]] = []  # (request, adapter, input ids, targets, batch size)
        shared: list[tuple[int, str, list[int], list[list[int]], int]] = []  # (request, adapter, context ids, continuations, batch size)
        for i, req in enumerate(requests):
            adapter = self.adapter_name(req.model)
            size = self._rows(req.model, self.max_length)
            if req.text is not None:
                pairs = loglik.rolling_windows(loglik.encode(self.tokenizer, req.text), loglik.prefix_token_id(self.tokenizer), self.max_length)
            else:
                context = loglik.context_text(self.tokenizer, req.prompt, req.messages)
                pairs = [loglik.encode_pair(self.tokenizer, context, c) for c in req.continuations]
                ctx = pairs[0][0] if pairs else []
                if ctx and all(p[0] == ctx and p[1] and len(p[0]) + len(p[1]) <= self.max_length + 1 for p in pairs):
                    shared.append((i, adapter, ctx, [p[1] for p in pairs], size))
                    continue
            for pair in pairs:
                ids, n = loglik.model_input(pair, self.max_length)
                rows.append((i, adapter, ids, pair[1][len(pair[1]) - n:], size))
        values: list[list[float]] = [[] for _ in requests]
        tokens = [0] * len(requests)
        t0 = time.perf_counter()
        scored: dict[int, float] = {}
        for adapter, idx in _by_adapter(rows, key=lambda r: -len(rows[r][2])).items():
            size = max(1, min(rows[r][4] for r in idx))
            for start in range(0, len(idx), size):
                batch = idx[start : start + size]
                for r, value in zip(batch, self._score_rows(adapter, [(rows[r][2], rows[r][3]) for r in batch])):
                    scored[r] = value
        choices: dict[int, list[float]] = {}
        for adapter, idx in _by_adapter(shared, key=lambda r: -len(shared[r][2])).items():
            size = max(1, min(shared[r][4] for r in idx))
            group: list[int] = []
            for r in [*idx, None]:  # a batch holds at most `size` choices (and so at most `size` contexts)
                if r is not None and (not group or sum(len(shared[b][3]) for b in group) + len(shared[r][3]) <= size):
                    group.append(r)
                    continue
                for b, vals in zip(group, self._score_shared(adapter, [(shared[b][2], shared[b][3]) for b in group])):
                    choices[b] = vals
                group = [r] if r is not None else []
        elapsed = time.perf_counter() - t0
        for r, (i, _, _, targets, _) in enumerate(rows):
            values[i].append(scored[r])
            tokens[i] += len(targets)
        for r, (i, _, _, conts, _) in enumerate(shared):
            values[i] = choices[r]
            tokens[i] = sum(len(c) for c in conts)
        out = []
        for i, req in enumerate(requests):
            v = values[i]
            lls = (sum(v),) if req.text is not None else tuple(v)
            out.append(Completion(text="", finish_reason="stop", tokens_in=tokens[i], latency_s=elapsed / max(1, len(requests)), loglikelihoods=lls))
        if progress:
            progress(len(requests))
        return out

    def _adapter_context(self, adapter: str) -> Any:
        import contextlib

        if adapter == BASE_ADAPTER:
            return self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else contextlib.nullcontext()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def _score_shared(self, adapter: str, items: Sequence[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """Summed log-probability of each continuation of each (context, continuations) item: the
        contexts run once (left-padded, with a cache), the continuations on the repeated cache.
        """
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(ctx) for ctx, _ in items)
        ctx_ids = torch.full((len(items), width), pad, dtype=torch.long)
        ctx_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ctx, _) in enumerate(items):
            ctx_ids[row, width - len(ctx):] = torch.tensor(ctx, dtype=torch.long)
            ctx_mask[row, width - len(ctx):] = 1
        owner = [row for row, (_, conts) in enumerate(items) for _ in conts]  # the item of every choice
        conts = [c for _, cs in items for c in cs]
        cwidth = max(len(c) for c in conts) - 1  # a choice's last token is predicted, never read
        device = getattr(self.model, "device", self.device)
        with torch.inference_mode(), self._adapter_context(adapter):
            first = self.model(input_ids=ctx_ids.to(device), attention_mask=ctx_mask.to(device),
                               position_ids=(ctx_mask.cumsum(-1) - 1).clamp(min=0).to(device), use_cache=True, logits_to_keep=1)
            first_lp = torch.log_softmax(first.logits[:, -1, :].float(), dim=-1)
            totals = [float(first_lp[owner[k], c[0]]) for k, c in enumerate(conts)]
            if cwidth > 0:
                index = torch.tensor(owner, device=device)
                cache = first.past_key_values
                cache.reorder_cache(index)
                cont_ids = torch.full((len(conts), cwidth), pad, dtype=torch.long)
                cont_mask = torch.zeros((len(conts), cwidth), dtype=torch.long)
                for k, c in enumerate(conts):  # right-padded: padding comes after every token that counts
                    cont_ids[k, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
                    cont_mask[k, : len(c) - 1] = 1
                lengths = ctx_mask.sum(-1)[owner]
                positions = lengths.unsqueeze(1) + torch.arange(cwidth).unsqueeze(0)
                mask = torch.cat([ctx_mask[owner], cont_mask], dim=1)
                out = self.model(input_ids=cont_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                                 past_key_values=cache, use_cache=True, cache_position=torch.arange(width, width + cwidth, device=device))
                logp = torch.log_softmax(out.logits.float(), dim=-1)
                for k, c in enumerate(conts):
                    if len(c) > 1:
                        targets = torch.tensor(c[1:], device=logp.device).unsqueeze(-1)
                        totals[k] += float(logp[k, : len(c) - 1, :].gather(-1, targets).sum())
        result: list[list[float]] = [[] for _ in items]
        for k, row in enumerate(owner):
            result[row].append(totals[k])
        return result

    def _score_rows(self, adapter: str, rows: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Summed log-probability of each row's targets, predicted by the row's last positions."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids, _ in rows)
        keep = max(len(t) for _, t in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (ids, _) in enumerate(rows):  # left padding: every row's last position is the batch's last
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        device = getattr(self.model, "device", self.device)
        with torch.inference_mode(), self._adapter_context(adapter):
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
                                logits_to_keep=keep, use_cache=False).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            out = []
            for row, (_, targets) in enumerate(rows):
                n = len(targets)
                lp = logp[row, keep - n:, :].gather(-1, torch.tensor(targets, device=logp.device).unsqueeze(-1))
                out.append(float(lp.sum()))
        return out

    def close(self) -> None:
        if self.model is None:
            return
        cuda = str(getattr(self, "device", "cpu")).startswith("cuda")
        self.model = None
        self.tokenizer = None
        gc.collect()
        if cuda:
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> "HFBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _by_adapter(entries: Sequence[tuple], key: Any) -> dict[str, list[int]]:
    """Indices of ``entries`` (whose second field is the adapter) per adapter, each list sorted by ``key``."""
    out: dict[str, list[int]] = {}
    for r in sorted(range(len(entries)), key=lambda r: (entries[r][1], key(r), r)):
        out.setdefault(entries[r][1], []).append(r)
    return out


def _free_memory(device: str) -> int | None:
    """Free bytes on ``device`` (CUDA: the allocator's view; CPU: available RAM), None when unknown."""
    try:
        if device.startswith("cuda"):
            import torch

            return int(torch.cuda.mem_get_info()[0])
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every id that ends a turn: the generation config's eos ids plus the tokenizer's eos."""
    ids: list[int] = []
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    if isinstance(eos, int):
        ids.append(eos)
    elif eos:
        ids.extend(int(i) for i in eos)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return tuple(ids)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _batch_seed(seeds: Any) -> int:
    """One generator seed for a batch of sampled rows, from the rows' own seeds (order-free): the same
    batch reproduces, and a batch of one row uses that row's seed as it always did.
    """
    unique = sorted(set(seeds))
    if len(unique) == 1:
        return int(unique[0])
    import hashlib

    return int.from_bytes(hashlib.sha256(",".join(map(str, unique)).encode()).digest()[:4], "big")
