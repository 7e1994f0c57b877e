"""The fast path: a lean decoding loop for GPT-2 event models, plugged into ``model.generate()``.

``model.generate()`` does its usual preparation (generation config, logits processors, stopping
criteria) and hands the loop to a callable given as ``custom_generate``; ``fast_sample`` is that
callable::

    from hf_midi.remote_code.fast_generation import fast_sample
    out = model.generate(ids, do_sample=True, max_new_tokens=512, custom_generate=fast_sample)

What it changes is only how the model's forward runs, one token a step:

- a key/value cache allocated once for the whole call (``generate()`` grows one by concatenation);
- the GPT-2 forward written out as the few tensor operations a one-token step needs (no module calls,
  masks, position ids or output objects), reading the model's own parameters;
- with ``weights="float16"`` or ``"int8"``, the six matrices of each layer repacked once (and kept
  until the parameters change) for fbgemm's CPU kernels, which read 2 or 4 x fewer bytes a step than
  float32 and, unlike MKL at a handful of rows, get faster per token as the batch grows.

Sampling itself is ``generate()``'s: the same processors in the same order, ``softmax`` and
``torch.multinomial`` once a step. With ``weights="float32"`` every operation is the one
``GPT2LMHeadModel`` runs, so under one seed the tokens equal plain ``model.generate()``'s, bit for bit
(a test holds it). ``float16`` (what "auto" picks on a CPU) and ``int8`` change the logits by rounding
the weights (float16 by ~1e-3 of their spread: its pieces came out token for token the same in the
quality check; int8 by more): the same model, measured by its samples' music statistics
(``benchmarks/bench_generate.py --quality``).

A model this loop does not cover (the LSTM, a PEFT wrapper, cross-attention, a padded batch,
``return_dict_in_generate``) goes through ``generate()``'s own loop unchanged, so ``custom_generate=
fast_sample`` is always safe to pass. Only torch and transformers are imported: the file travels with
the pipeline into a Hub folder.
"""

from __future__ import annotations

import logging
import math
import warnings
import weakref

import torch
import torch.nn.functional as F

from .errors import HfMidiError
from .private_api import parameter_versions, sampling_loop

logger = logging.getLogger(__name__)
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {weights: (signature, FastGPT2)}

WEIGHT_FORMATS = ("float32", "float16", "int8")
# "auto" on a CPU with fbgemm: float16 weights, fbgemm-packed (measured in benchmarks/RESULTS.md, one
# thread: at least as fast as float32 at every size and batch, 1.5-2.6 x at a batch of 4, and the
# same tokens as float32 on every piece of the quality check); float32 elsewhere (a GPU, ARM builds).
AUTO_CPU = "float16"
_ACTIVATIONS = {
    "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))),
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class FastPathError(HfMidiError):
    """A weight format or model the fast path cannot run (raised before any token is made)."""


def unsupported_reason(model) -> str | None:
    """Why ``model`` cannot take the fast path (None: it can)."""
    from transformers import GPT2LMHeadModel

    if not isinstance(model, GPT2LMHeadModel):
        return f"{type(model).__name__} is not a GPT2LMHeadModel"
    cfg = model.config
    if getattr(cfg, "add_cross_attention", False):
        return "cross-attention"
    if getattr(cfg, "reorder_and_upcast_attn", False):
        return "reorder_and_upcast_attn"
    if cfg.activation_function not in _ACTIVATIONS:
        return f"activation {cfg.activation_function}"
    if model.training:
        return "the model is in training mode (dropout)"
    if any(type(b.attn.c_attn).__name__ != "Conv1D" or type(b.mlp.c_fc).__name__ != "Conv1D"
           for b in model.transformer.h):
        return "layers are wrapped (an adapter)"
    return None


def packed_formats_available() -> bool:
    """float16/int8 need fbgemm's CPU kernels (x86 builds of torch)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def resolve_weights(model, weights: str = "auto") -> str:
    """The weight format ``weights`` means for ``model`` ("auto" chooses ``AUTO_CPU`` on a CPU with fbgemm,
    float32 elsewhere)."""
    if weights == "auto":
        cpu = getattr(model, "device", torch.device("cpu")).type == "cpu"
        return AUTO_CPU if cpu and packed_formats_available() else "float32"
    if weights not in WEIGHT_FORMATS:
        raise FastPathError(f"weights must be auto or one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    return weights


def _linear(conv, fmt: str):
    """One of GPT-2's Conv1D matrices as a function of x (N, in), in the chosen format."""
    w, b = conv.weight.detach(), conv.bias.detach()
    if fmt == "float32":
        return lambda x: torch.addmm(b, x, w)  # the parameters themselves, exactly as Conv1D computes
    wt = w.t().float().contiguous()  # (out, in), the Linear layout fbgemm packs
    bias = b.float().contiguous()
    if fmt == "float16":
        packed = torch.ops.quantized.linear_prepack_fp16(wt, bias)
        return lambda x: torch.ops.quantized.linear_dynamic_fp16(x, packed)
    # int8: per output channel, symmetric
    scale = (wt.abs().amax(1) / 127.0).clamp(min=1e-12).double()
    with warnings.catch_warnings():  # torch 2.13 marks quantized tensors deprecated (RESULTS.md)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        q = torch.quantize_per_channel(wt, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(q, bias)
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed)


class FastGPT2:
    """GPT-2's forward for generation: a preallocated cache, one step = a few tensor operations.

    ``start(batch, capacity)`` allocates the cache; ``step(ids)`` runs the next ``ids`` (B, T)
    (the prompt, then one token at a time) and returns the last position's logits (B, vocab) in
    float32. Built by ``for_model``, which keeps one per model and weight format until the
    parameters change.
    """

    def __init__(self, model, weights: str = "float32"):
        if weights not in WEIGHT_FORMATS:
            raise FastPathError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
        reason = unsupported_reason(model)
        if reason is not None:
            raise FastPathError(f"the fast path cannot run this model: {reason}")
        if weights != "float32" and (model.device.type != "cpu" or not packed_formats_available()):
            raise FastPathError(f"weights={weights!r} needs fbgemm on a CPU (this is {model.device.type}, "
                                f"engines {torch.backends.quantized.supported_engines})")
        cfg, tr = model.config, model.transformer
        self.weights = weights
        self.layers, self.heads, self.width = cfg.n_layer, cfg.n_head, cfg.n_embd
        self.head_dim = self.width // self.heads
        self.positions = cfg.n_positions
        self.eps = cfg.layer_norm_epsilon
        self.scale = self.head_dim ** -0.5 if cfg.scale_attn_weights else 1.0
        self.act = _ACTIVATIONS[cfg.activation_function]
        if weights != "float32" and cfg.activation_function == "gelu_new":
            # the same tanh formula as one kernel instead of seven; ~1e-7 apart, and these formats
            # round the weights far more than that already
            self.act = _ACTIVATIONS["gelu_pytorch_tanh"]
        self.wte, self.wpe = tr.wte.weight.detach(), tr.wpe.weight.detach()
        self.head = model.lm_head.weight.detach()
        self.ln_f = (tr.ln_f.weight.detach(), tr.ln_f.bias.detach())
        self.blocks = []
        for i, b in enumerate(tr.h):
            scale = self.scale / (i + 1) if cfg.scale_attn_by_inverse_layer_idx else self.scale
            self.blocks.append((
                b.ln_1.weight.detach(), b.ln_1.bias.detach(), _linear(b.attn.c_attn, weights),
                _linear(b.attn.c_proj, weights), b.ln_2.weight.detach(), b.ln_2.bias.detach(),
                _linear(b.mlp.c_fc, weights), _linear(b.mlp.c_proj, weights), scale,
            ))
        self.dtype, self.device = self.wte.dtype, self.wte.device
        self.kv = None  # (layers, 2, batch, heads, capacity, head_dim): keys and values, written at once
        self.layer_kv: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.length = 0
        self.ids: torch.Tensor | None = None  # (batch, length) the ids whose keys and values the cache holds
        self.shared = 0  # positions every row of the cache holds alike

    @staticmethod
    def signature(model) -> tuple:
        """Changes whenever a parameter is replaced, moved, cast or updated in place."""
        return parameter_versions(model)

    @classmethod
    def for_model(cls, model, weights: str = "float32") -> FastGPT2:
        """The decoder of ``model`` in ``weights`` format, built once and kept on the model (rebuilt when
        its parameters change: training, ``.to()``, ``.float()``)."""
        kept = _KEPT.setdefault(model, {})
        sig = cls.signature(model)
        hit = kept.get(weights)
        if hit is None or hit[0] != sig:
            kept[weights] = (sig, cls(model, weights))
        return kept[weights][1]

    def start(self, batch: int, capacity: int) -> None:
        if capacity > self.positions:
            raise FastPathError(f"{capacity} positions asked for; the model has {self.positions}")
        shape = (self.layers, 2, batch, self.heads, capacity, self.head_dim)
        # (a cache made under torch.inference_mode() cannot be written outside it, nor the reverse)
        if self.kv is None or self.kv.shape != shape or self.kv.is_inference() != torch.is_inference_mode_enabled():
            self.kv = torch.empty(shape, dtype=self.dtype, device=self.device)
            self.layer_kv = [(kv, kv[0], kv[1]) for kv in self.kv]
        self.length, self.ids, self.shared = 0, None, 0

    def resume(self, input_ids: torch.LongTensor, capacity: int) -> int:
        """Start a call on ``input_ids`` (B, T), keeping what the cache already holds of them: each row takes
        the keys and values of the cached row sharing its longest prefix (at most T - 1 positions, so that a
        step is left to give the logits). Returns the positions kept (0: a fresh start, as ``start``).

        Search while composing (``search.py``) calls ``generate()`` once a chunk on K copies of the chosen
        candidate: only the positions where the cached rows differ are copied, no prompt is run again. The
        logits of a kept position were computed one step at a time rather than in one prompt pass, so they
        can differ from a fresh call's in the last bits: only callers that ask for it (``reuse_cache=True``)
        get this."""
        rows, length = input_ids.shape
        cached = self.ids
        fits = (self.kv is not None and cached is not None and self.kv.shape[4] >= capacity
                and self.kv.is_inference() == torch.is_inference_mode_enabled())
        n = min(cached.shape[1], length - 1) if fits else 0
        if n <= 0:
            self.start(rows, capacity)
            return 0
        same = input_ids[:, None, :n] == cached[None, :, :n].to(input_ids.device)  # (B, cached rows, n)
        common = same.long().cumprod(2).sum(2)
        best, source = common.max(1)
        keep = int(best.min())
        if keep == 0:
            self.start(rows, capacity)
            return 0
        if rows != self.kv.shape[2]:
            kv = torch.empty(self.kv.shape[:2] + (rows,) + self.kv.shape[3:], dtype=self.dtype, device=self.device)
            kv[:, :, :, :, :keep] = self.kv[:, :, source, :, :keep]
            self.kv = kv
            self.layer_kv = [(layer, layer[0], layer[1]) for layer in self.kv]
        elif not torch.equal(source, torch.arange(rows, device=source.device)):
            a = min(self.shared, keep)  # positions before it are alike in every row: nothing to copy
            self.kv[:, :, :, :, a:keep] = self.kv[:, :, source, :, a:keep]
        self.length = keep
        self.remember(input_ids[:, :keep])
        return keep

    def remember(self, ids: torch.LongTensor) -> None:
        """Note that the cache holds the keys and values of ``ids`` (B, length), for ``resume``."""
        self.ids = ids
        alike = (ids == ids[:1]).all(0)
        self.shared = int(alike.long().cumprod(0).sum())

    @property
    def capacity(self) -> int:
        return self.kv.shape[4]

    def step(self, ids: torch.LongTensor) -> torch.Tensor:
        B, T = ids.shape
        pos, E, eps = self.length, self.width, self.eps
        end = pos + T
        if end > self.capacity:
            raise FastPathError(f"the cache holds {self.capacity} positions; position {end - 1} asked for")
        causal = T > 1 and pos == 0
        # several ids after a kept prefix (``resume``): each sees the prefix and the ids before it
        mask = torch.ones(T, end, dtype=torch.bool, device=ids.device).tril(pos) if T > 1 and pos > 0 else None
        shape, rows, split = (E,), B * T, (B, T, 3, self.heads, self.head_dim)
        x = self.wte[ids] + self.wpe[pos:end]
        for (w1, b1, qkv_proj, out_proj, w2, b2, fc, proj, scale), (kv, k, v) in zip(self.blocks, self.layer_kv):
            h = torch.layer_norm(x, shape, w1, b1, eps)
            qkv = qkv_proj(h.view(rows, E)).view(split).permute(2, 0, 3, 1, 4)  # (3, B, heads, T, head_dim)
            kv[:, :, :, pos:end] = qkv[1:]
            a = F.scaled_dot_product_attention(qkv[0], k[:, :, :end], v[:, :, :end], attn_mask=mask, scale=scale,
                                               is_causal=causal)
            x = x + out_proj(a.transpose(1, 2).reshape(rows, E)).view(B, T, E)
            h = torch.layer_norm(x, shape, w2, b2, eps)
            x = x + proj(self.act(fc(h.view(rows, E)))).view(B, T, E)
        self.length = end
        x = torch.layer_norm(x[:, -1], shape, self.ln_f[0], self.ln_f[1], eps)
        return F.linear(x, self.head).float()


class _Suppress:
    """``SuppressTokensLogitsProcessor`` with its mask built once: the same -inf at the same ids."""

    def __init__(self, processor):
        self.tokens = processor.suppress_tokens
        self.mask = None

    def __call__(self, input_ids, scores):
        if self.mask is None or self.mask.shape[0] != scores.shape[-1]:
            vocab = torch.arange(scores.shape[-1], device=scores.device)
            self.mask = torch.isin(vocab, self.tokens.to(scores.device))
        return scores.masked_fill(self.mask, -math.inf)


def _plan(logits_processor, stopping_criteria):
    """The processors and criteria as plain callables, checked once instead of every step.

    ``LogitsProcessorList.__call__`` inspects each processor's signature every step (more than the
    processors cost here); processors taking only (input_ids, scores) are called directly. The
    max-length criterion becomes the loop's bound; the <eos> criterion a comparison. Anything needing
    more goes through its list as in ``generate()``."""
    import inspect

    from transformers import SuppressTokensLogitsProcessor
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    if any(len(inspect.signature(p.__call__).parameters) > 2 for p in logits_processor):
        processors = [logits_processor]
    else:  # generate()'s token suppression rebuilds its mask with torch.isin every step: built once here
        processors = [_Suppress(p) if type(p) is SuppressTokensLogitsProcessor else p for p in logits_processor]
    criteria, eos = [], None
    for c in stopping_criteria:
        if isinstance(c, MaxLengthCriteria):
            continue  # the loop stops at stopping_criteria.max_length
        if isinstance(c, EosTokenCriteria) and eos is None:
            ids = c.eos_token_id.flatten()
            eos = (lambda t, e=ids[0]: t == e) if ids.numel() == 1 else (lambda t, e=ids: torch.isin(t, e))
            continue
        criteria.append(c)
    return processors, criteria, eos


def _fallback_reason(model, generation_config, synced_gpus, model_kwargs) -> str | None:
    """Why the fast loop cannot run this call (``generate()``'s own loop runs it), or None."""
    reason = unsupported_reason(model)
    if reason is None and model_kwargs.get("attention_mask") is not None:
        reason = "an attention mask with padding"
    if reason is None and generation_config.return_dict_in_generate:
        reason = "return_dict_in_generate"
    if reason is None and (generation_config.num_beams or 1) > 1:
        reason = "beam search"
    if reason is None and synced_gpus:
        reason = "synced_gpus"
    return reason


def _pad_id(generation_config, device) -> torch.Tensor | None:
    """The id written after a row's end (generate()'s ``pad_token_id``; the first of a list), as a tensor."""
    pad = generation_config.pad_token_id
    if isinstance(pad, (list, tuple)):
        pad = pad[0] if pad else None
    return None if pad is None else torch.tensor(pad, device=device)


def _start(decoder: FastGPT2, input_ids: torch.Tensor, max_length: int, reuse_cache: bool,
           share_prompt: bool = False) -> int:
    """Ready the cache for a call; the positions it keeps from the last call (0 unless ``reuse_cache``).
    ``share_prompt``: the rows are copies of one prompt (a search's first chunk): the prompt runs once, for one
    row, and its keys and values are copied to the others (``resume``)."""
    # a search's calls take the whole context, so that the next chunk's call finds the cache big enough
    capacity = decoder.positions if reuse_cache or share_prompt else min(max_length, decoder.positions)
    if share_prompt and input_ids.shape[0] > 1 and input_ids.shape[1] > 2 and bool(
            (input_ids == input_ids[:1]).all()):
        decoder.start(1, capacity)
        decoder.step(input_ids[:1, :-1])
        decoder.remember(input_ids[:1, :-1])
        return decoder.resume(input_ids, capacity)
    if reuse_cache:
        return decoder.resume(input_ids, capacity)
    decoder.start(input_ids.shape[0], capacity)
    return 0


def fast_sample(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                streamer=None, weights: str = "auto", stream=None, reuse_cache: bool = False,
                share_prompt: bool = False, **model_kwargs):
    """``model.generate(..., custom_generate=fast_sample)``: generate()'s sampling (or greedy) loop with
    ``FastGPT2`` as the forward. ``weights`` (auto / float32 / float16 / int8; passed to ``generate()``
    as a keyword): auto is ``AUTO_CPU`` on a CPU with fbgemm, float32 elsewhere. ``reuse_cache``: keep what the
    cache holds of these rows from the last call; ``share_prompt``: the rows are copies of one prompt, run once.
    Returns the ids, as ``generate()`` does (prompt + new tokens, ``<pad>`` after a row's end). Falls
    back to ``generate()``'s own loop where the fast one does not apply (logged).

    ``stream``: the streamer for the new tokens. transformers 5.24 does not hand ``streamer=`` on to a
    callable ``custom_generate`` (``_extract_generation_mode_kwargs`` keeps only the callable's own extra
    arguments), though ``generate()`` itself still sends it the prompt; so give the same streamer as
    ``stream=`` too (``generate_music`` does). Either one reaching this loop is used."""
    if streamer is None:
        streamer = stream
    reason = _fallback_reason(model, generation_config, synced_gpus, model_kwargs)
    if reason is not None:
        if weights not in ("auto", "float32"):  # asked for by name: say why it cannot be had
            raise FastPathError(f"weights={weights!r} needs the fast path, which cannot run here: {reason}")
        logger.info("fast path off (%s): generate()'s own loop runs", reason)
        return sampling_loop(model)(model, input_ids, logits_processor=logits_processor,
                                   stopping_criteria=stopping_criteria, generation_config=generation_config,
                                   synced_gpus=synced_gpus, streamer=streamer, **model_kwargs)

    decoder = FastGPT2.for_model(model, resolve_weights(model, weights))
    batch, length = input_ids.shape
    max_length = stopping_criteria.max_length or generation_config.max_length or decoder.positions
    if length >= decoder.positions:
        raise FastPathError(f"the prompt has {length} tokens; the model's context holds {decoder.positions} "
                            "(continue from its last part)")
    kept = _start(decoder, input_ids, max_length, reuse_cache, share_prompt)
    pad = _pad_id(generation_config, input_ids.device)
    processors, criteria, eos = _plan(logits_processor, stopping_criteria)
    if eos is not None and pad is None:
        raise ValueError("`stopping_criteria` has an <eos> criterion, so `pad_token_id` must be set")
    unfinished = torch.ones(batch, dtype=torch.long, device=input_ids.device)
    do_sample = generation_config.do_sample
    # The whole output, preallocated; processors and criteria see views of its first columns.
    out = torch.empty(batch, max(max_length, length + 1), dtype=input_ids.dtype, device=input_ids.device)
    out[:, :length] = input_ids
    step_ids = input_ids[:, kept:]
    while length < max_length and decoder.length + step_ids.shape[1] <= decoder.capacity:
        scores = decoder.step(step_ids)
        ids = out[:, :length]
        for processor in processors:
            scores = processor(ids, scores)
        if do_sample:
            next_tokens = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            next_tokens = torch.argmax(scores, dim=-1)
        if eos is not None:
            next_tokens = next_tokens * unfinished + pad * (1 - unfinished)
        out[:, length] = next_tokens
        length += 1
        if streamer is not None:
            streamer.put(next_tokens.cpu())
        ids = out[:, :length]
        done = eos(next_tokens) if eos is not None else None
        for criterion in criteria:
            hit = criterion(ids, None)
            done = hit if done is None else done | hit
        if done is not None:
            unfinished = unfinished & ~done
            if unfinished.max() == 0:
                break
        step_ids = next_tokens[:, None]
    if streamer is not None:
        streamer.end()
    if reuse_cache or share_prompt:
        decoder.remember(out[:, : decoder.length].clone())
    return out[:, :length].clone()


__all__ = ["FastGPT2", "FastPathError", "WEIGHT_FORMATS", "fast_sample", "packed_formats_available",
           "unsupported_reason"]
