"""Iteration-level (continuous) decoding for T5: sequences join and leave the batch at every step.

``T5DecodeLoop`` keeps one batch of running sequences and advances all of them by one token
per ``step()``. New sequences are encoded (one encoder call for all that arrive together) and
join at the next step; a sequence leaves as soon as it emits EOS, reaches its own
``max_new_tokens``, is cancelled (client gone, timed out, server stopping) or passes its
deadline, and its slot is free for the next one. Each sequence keeps its own generation
parameters (greedy or sampling, temperature, top-k, top-p, repetition penalty,
no-repeat n-grams, min_new_tokens), applied as transformers' ``generate`` applies them.

The loop runs over the model's own modules (encoder, decoder blocks' q/k/v/o projections,
layer norms, feed-forward layers, lm_head) with its own key/value tensors; it does not use
transformers' ``Cache`` classes or ``generate``. Those changed shape across the versions the
LMI images ship (4.51's tuples / ``EncoderDecoderCache`` with ``key_cache`` lists and
``past_key_values=``; 5.x's ``layers[i].keys`` and ``cache=``), while T5's module layout and
weight names have not. The math is T5's (transformers' T5Attention, T5Block):

- self-attention keys of sequence i sit at the right end of a shared, left-padded cache
  (columns ``T - len_i .. T-1``; the rest is masked). T5's position bias depends only on the
  distance between query and key, and the query is always at column ``T``, so left padding
  keeps every distance, hence every bias, exactly as in an unpadded run;
- cross-attention keys/values are computed once per sequence from its encoder output
  (right-padded, masked); T5 adds no position bias there;
- no scaling of q·k (T5 folds it into the weights); softmax of the scores plus bias plus mask;
- hidden states clamped in fp16 after each sub-layer, as T5Block does;
- the decoder output scaled by d_model**-0.5 before lm_head when the checkpoint ties its head
  (``scale_decoder_outputs`` in transformers 5, ``tie_word_embeddings`` in 4.x).

tests/serve/test_decode.py checks greedy ids against ``generate`` under both transformers
majors, including sequences that join while others are mid-decode.
Imports: stdlib + torch (transformers only to read its version).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence as SequenceType
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

try:
    from .compat import major_version
except ImportError:  # copied flat next to model.py in the container
    from compat import major_version  # type: ignore[no-redef]


class SequenceCancelled(Exception):
    """The sequence was retired before it finished (client gone, timed out, server stopping)."""


@dataclass(eq=False)
class Sequence:
    """One input text being decoded; ``generated`` grows by one token per step."""

    input_ids: list[int]
    params: dict
    deadline: float | None = None  # time.monotonic() after which it is retired with ``timed_out``
    owner: object = None  # whatever the caller needs to route the result (request, index)
    generated: list[int] = field(default_factory=list)
    steps: int = 0  # decoder tokens fed so far (its columns in the self-attention cache)
    cancelled: bool = False  # set from any thread; seen at the next step
    finished: bool = False
    timed_out: bool = False

    @property
    def max_new_tokens(self) -> int:
        return int(self.params["max_new_tokens"])

    def cancel(self) -> None:
        self.cancelled = True


def _eos_ids(model) -> tuple[int, ...]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = model.config.eos_token_id
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def scales_decoder_output(config, transformers_version: str) -> bool:
    """Whether T5ForConditionalGeneration multiplies the decoder output by d_model**-0.5 before lm_head."""
    if major_version(transformers_version) >= 5:
        return bool(getattr(config, "scale_decoder_outputs", False))
    return bool(getattr(config, "tie_word_embeddings", False))


class T5DecodeLoop:
    """The running batch of one T5 model; not thread-safe: one thread calls ``admit`` and ``step``."""

    def __init__(self, model, *, pad_token_id: int | None = None):
        import transformers

        config = model.config
        if getattr(config, "model_type", "") not in ("t5", "mt5"):
            raise ValueError(f"iteration-level decoding is implemented for T5 models, not {config.model_type!r}")
        self.model = model
        self.encoder = model.get_encoder()
        decoder = model.get_decoder()
        self.blocks = list(decoder.block)
        self.embed = decoder.embed_tokens
        self.final_norm = decoder.final_layer_norm
        self.lm_head = model.lm_head
        self.heads, self.d_kv = config.num_heads, config.d_kv
        self.scale = config.d_model ** -0.5 if scales_decoder_output(config, transformers.__version__) else None
        self.rel = self.blocks[0].layer[0].SelfAttention
        self.start_id = int(config.decoder_start_token_id if config.decoder_start_token_id is not None else 0)
        self.pad_id = int(pad_token_id if pad_token_id is not None else (config.pad_token_id or 0))
        self.eos_ids = _eos_ids(model)
        self.generation_config = getattr(model, "generation_config", None)
        self.device = self.embed.weight.device
        self.dtype = self.embed.weight.dtype if self.embed.weight.is_floating_point() else torch.float32
        self.seqs: list[Sequence] = []
        self._bias_table: torch.Tensor | None = None  # [heads, distance]
        self.steps = 0  # decode steps run (all sequences advanced by one token)
        self.batch_sizes_total = 0  # sum of the batch sizes of those steps
        self._reset_state()

    # -- state -----------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.seqs = []
        self.T = 0  # columns used in the self-attention cache (shared, left-padded)
        self.self_k: list[torch.Tensor] = []
        self.self_v: list[torch.Tensor] = []
        # With no sequence these are empty (batch dimension 0); admit() replaces them with the first batch's.
        self.valid = torch.zeros((0, 0), dtype=torch.bool, device=self.device)  # [B, capacity]: which cache columns hold a real key
        self.cross_k: list[torch.Tensor] = []
        self.cross_v: list[torch.Tensor] = []
        # [B, 1, 1, S] additive mask over encoder positions
        self.cross_mask = torch.zeros((0, 1, 1, 0), dtype=self.dtype, device=self.device)
        self.last = torch.zeros((0,), dtype=torch.long, device=self.device)  # [B] the token each sequence feeds next

    def reset(self) -> list[Sequence]:
        """Drop every running sequence (they are returned, unfinished)."""
        dropped = self.seqs
        self._reset_state()
        return dropped

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def _neg(self) -> float:
        return torch.finfo(self.dtype).min

    def _bias(self, keys: int) -> torch.Tensor:
        """T5's relative position bias for the query at column ``keys - 1`` over keys 0..keys-1: [1, H, 1, keys]."""
        if self._bias_table is None or self._bias_table.shape[1] < keys:
            size = max(64, 1 << (keys - 1).bit_length())
            distance = -torch.arange(size, device=self.device)[None, :]  # key minus query position
            bucket = self.rel._relative_position_bucket(
                distance, bidirectional=False, num_buckets=self.rel.relative_attention_num_buckets,
                max_distance=self.rel.relative_attention_max_distance)
            self._bias_table = self.rel.relative_attention_bias(bucket)[0].permute(1, 0).to(self.dtype)  # [H, size]
        order = torch.arange(keys - 1, -1, -1, device=self.device)  # key j is keys-1-j steps behind the query
        return self._bias_table[:, order][None, :, None, :]

    def _grow(self, needed: int) -> None:
        capacity = self.valid.shape[1]
        if needed <= capacity:
            return
        new_capacity = max(16, capacity * 2, needed)
        pad = new_capacity - capacity
        self.self_k = [F.pad(t, (0, 0, 0, pad)) for t in self.self_k]
        self.self_v = [F.pad(t, (0, 0, 0, pad)) for t in self.self_v]
        self.valid = F.pad(self.valid, (0, pad), value=False)

    # -- joining --------------------------------------------------------------------------------
    @torch.inference_mode()
    def admit(self, seqs: SequenceType[Sequence]) -> None:
        """Encode ``seqs`` together and add them to the batch; they decode from the next ``step()``."""
        seqs = list(seqs)
        if not seqs:
            return
        n, longest = len(seqs), max(len(s.input_ids) for s in seqs)
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids, dtype=torch.long)
            mask[i, : len(s.input_ids)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        cross_k, cross_v = [], []
        for block in self.blocks:
            attn = block.layer[1].EncDecAttention
            cross_k.append(attn.k(hidden).view(n, longest, self.heads, self.d_kv).transpose(1, 2))
            cross_v.append(attn.v(hidden).view(n, longest, self.heads, self.d_kv).transpose(1, 2))
        cross_mask = torch.zeros((n, 1, 1, longest), dtype=self.dtype, device=self.device)
        cross_mask.masked_fill_(mask[:, None, None, :] == 0, self._neg)
        capacity = self.valid.shape[1] if self.seqs else 16
        new_self = torch.zeros((n, self.heads, capacity, self.d_kv), dtype=cross_k[0].dtype, device=self.device)
        new_valid = torch.zeros((n, capacity), dtype=torch.bool, device=self.device)
        new_last = torch.full((n,), self.start_id, dtype=torch.long, device=self.device)
        if not self.seqs:
            self.self_k = [new_self.clone() for _ in self.blocks]
            self.self_v = [new_self.clone() for _ in self.blocks]
            self.valid, self.cross_k, self.cross_v, self.cross_mask, self.last = \
                new_valid, cross_k, cross_v, cross_mask, new_last
        else:
            width = max(self.cross_mask.shape[-1], longest)
            self.cross_k = [torch.cat([_pad_to(a, width, 2), _pad_to(b, width, 2)]) for a, b in zip(self.cross_k, cross_k, strict=True)]
            self.cross_v = [torch.cat([_pad_to(a, width, 2), _pad_to(b, width, 2)]) for a, b in zip(self.cross_v, cross_v, strict=True)]
            self.cross_mask = torch.cat([_pad_to(self.cross_mask, width, 3, self._neg),
                                         _pad_to(cross_mask, width, 3, self._neg)])
            self.self_k = [torch.cat([t, new_self]) for t in self.self_k]
            self.self_v = [torch.cat([t, new_self]) for t in self.self_v]
            self.valid = torch.cat([self.valid, new_valid])
            self.last = torch.cat([self.last, new_last])
        self.seqs.extend(seqs)

    # -- one step --------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[Sequence]:
        """Advance every sequence by one token; return (and remove) those that finished or were cancelled."""
        done = self.retire_cancelled()  # cancelled or late: gone before they cost another step
        if not self.seqs:
            return done
        logits = self._forward()
        tokens = self._choose(logits)
        for s, token in zip(self.seqs, tokens, strict=True):
            s.generated.append(token)
            s.steps += 1
            if token in self.eos_ids or len(s.generated) >= s.max_new_tokens:
                s.finished = True
        self.last = torch.tensor(tokens, dtype=torch.long, device=self.device)
        self.steps += 1
        self.batch_sizes_total += len(tokens)
        return done + self._retire()

    def retire_cancelled(self) -> list[Sequence]:
        """Remove (and return) the sequences cancelled or past their deadline, without a step."""
        now = time.monotonic()
        for s in self.seqs:
            if s.cancelled or (s.deadline is not None and now > s.deadline):
                s.timed_out = not s.cancelled
                s.finished = True
        return self._retire()

    def _clamp(self, h: torch.Tensor) -> torch.Tensor:
        if h.dtype == torch.float16 and torch.isinf(h).any():
            limit = torch.finfo(h.dtype).max - 1000
            h = torch.clamp(h, min=-limit, max=limit)
        return h

    def _forward(self) -> torch.Tensor:
        """Logits [B, vocab] (float32) for the token after each sequence's last one."""
        b, t, heads, d_kv = len(self.seqs), self.T, self.heads, self.d_kv
        self._grow(t + 1)
        self.valid[:, t] = True
        keys = t + 1
        self_mask = torch.zeros((b, 1, 1, keys), dtype=self.dtype, device=self.device)
        self_mask.masked_fill_(~self.valid[:, None, None, :keys], self._neg)
        self_bias = self._bias(keys) + self_mask
        cross_bias = self.cross_mask
        h = self.embed(self.last)[:, None, :]
        for i, block in enumerate(self.blocks):
            layer = block.layer[0]
            attn = layer.SelfAttention
            x = layer.layer_norm(h)
            q = attn.q(x).view(b, 1, heads, d_kv).transpose(1, 2)
            self.self_k[i][:, :, t] = attn.k(x).view(b, heads, d_kv)
            self.self_v[i][:, :, t] = attn.v(x).view(b, heads, d_kv)
            out = _attention(q, self.self_k[i][:, :, :keys], self.self_v[i][:, :, :keys], self_bias)
            h = self._clamp(h + attn.o(out.transpose(1, 2).reshape(b, 1, heads * d_kv)))
            layer = block.layer[1]
            attn = layer.EncDecAttention
            x = layer.layer_norm(h)
            q = attn.q(x).view(b, 1, heads, d_kv).transpose(1, 2)
            out = _attention(q, self.cross_k[i], self.cross_v[i], cross_bias)
            h = self._clamp(h + attn.o(out.transpose(1, 2).reshape(b, 1, heads * d_kv)))
            h = self._clamp(block.layer[2](h))
        h = self.final_norm(h)
        if self.scale is not None:
            h = h * self.scale
        self.T = keys
        return self.lm_head(h)[:, 0, :].float()

    def _default(self, name: str, fallback):
        value = getattr(self.generation_config, name, None) if self.generation_config is not None else None
        return fallback if value is None else value

    def _choose(self, logits: torch.Tensor) -> list[int]:
        """Each sequence's next token under its own parameters, in transformers' processor order:
        repetition penalty, no-repeat n-grams, min_new_tokens; then temperature, top-k, top-p when sampling."""
        special = []
        for row, s in enumerate(self.seqs):
            p = s.params
            if p.get("min_new_tokens", 0) > len(s.generated) and self.eos_ids:
                logits[row, list(self.eos_ids)] = -math.inf
            if (p.get("do_sample") or p.get("repetition_penalty", self._default("repetition_penalty", 1.0)) != 1.0
                    or p.get("no_repeat_ngram_size", self._default("no_repeat_ngram_size", 0))):
                special.append(row)
        tokens = logits.argmax(-1).tolist()
        for row in special:
            tokens[row] = self._choose_one(logits[row], self.seqs[row])
        return tokens

    def _choose_one(self, scores: torch.Tensor, s: Sequence) -> int:
        p = s.params
        history = [self.start_id] + s.generated  # the decoder's input_ids, as generate's processors see them
        penalty = float(p.get("repetition_penalty", self._default("repetition_penalty", 1.0)))
        if penalty != 1.0:
            seen = torch.tensor(sorted(set(history)), device=scores.device)
            picked = scores[seen]
            scores[seen] = torch.where(picked < 0, picked * penalty, picked / penalty)
        n = int(p.get("no_repeat_ngram_size", self._default("no_repeat_ngram_size", 0)))
        if n and len(history) + 1 >= n:
            prefix = tuple(history[len(history) - n + 1:]) if n > 1 else ()
            banned = {history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i:i + n - 1]) == prefix}
            if banned:
                scores[list(banned)] = -math.inf
        if not p.get("do_sample"):
            return int(scores.argmax())
        temperature = float(p.get("temperature", self._default("temperature", 1.0)))
        if temperature != 1.0:
            scores = scores / temperature
        top_k = int(p.get("top_k", self._default("top_k", 0)) or 0)
        if top_k:
            kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[-1]
            scores = scores.masked_fill(scores < kth, -math.inf)
        top_p = float(p.get("top_p", self._default("top_p", 1.0)))
        if top_p < 1.0:
            ordered, order = torch.sort(scores, descending=False)
            cumulative = ordered.softmax(-1).cumsum(-1)
            remove = cumulative <= (1 - top_p)
            remove[-1] = False  # keep at least one
            scores = scores.masked_fill(remove.scatter(0, order, remove), -math.inf)
        return int(torch.multinomial(scores.softmax(-1), 1))

    def _retire(self) -> list[Sequence]:
        """Remove finished sequences; free their rows and the cache columns no remaining sequence uses."""
        if not any(s.finished for s in self.seqs):
            return []
        done = [s for s in self.seqs if s.finished]
        keep = [i for i, s in enumerate(self.seqs) if not s.finished]
        if not keep:
            self._reset_state()
            return done
        index = torch.tensor(keep, device=self.device)
        longest = max(self.seqs[i].steps for i in keep)
        start = self.T - longest if self.T - longest >= 16 else 0  # drop columns only padding uses
        self.self_k = [t.index_select(0, index)[:, :, start:].contiguous() for t in self.self_k]
        self.self_v = [t.index_select(0, index)[:, :, start:].contiguous() for t in self.self_v]
        self.valid = self.valid.index_select(0, index)[:, start:].contiguous()
        self.T -= start
        width = max(len(self.seqs[i].input_ids) for i in keep)
        self.cross_k = [t.index_select(0, index)[:, :, :width] for t in self.cross_k]
        self.cross_v = [t.index_select(0, index)[:, :, :width] for t in self.cross_v]
        self.cross_mask = self.cross_mask.index_select(0, index)[..., :width]
        self.last = self.last.index_select(0, index)
        self.seqs = [self.seqs[i] for i in keep]
        return done


def _attention(q, k, v, bias):
    """softmax(q·kᵀ + bias)·v with T5's unit scale (the scale is folded into T5's weights)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)


def _pad_to(t: torch.Tensor, width: int, dim: int, value: float = 0.0) -> torch.Tensor:
    extra = width - t.shape[dim]
    if extra <= 0:
        return t
    pad = [0, 0] * (t.dim() - dim - 1) + [0, extra]
    return F.pad(t, pad, value=value)


# Admission: every admit() is one encoder pass plus a re-layout of the caches. On a GPU both cost about what a decode
# step costs whatever their size (a fixed host-side cost per layer), so letting one newcomer in at every step, as a
# busy server with mixed lengths would, halves its throughput: benchmarks/bench_serve.py --device cuda on an H200,
# 2026-11-30, FLAN-T5-xl shape, mixed lengths: 4.3 req/s against 8.6 for static batches. Newcomers to a busy batch
# therefore gather until a quarter of the slots can be filled in one call, or until they have waited this many steps.
ADMIT_GATHER_FRACTION = 4  # gather until slots // 4 can join together
ADMIT_MAX_WAIT_STEPS = 8   # ...or at most this many decode steps


def admission_due(waiting: int, running: int, slots: int, waited_steps: int) -> bool:
    """Whether ``waiting`` sequences should join a loop running ``running`` of ``slots`` now (one encoder call).

    Now when the loop is idle or less than half full (latency first: nothing to amortise against), when a
    quarter of the slots can be filled together, or when the oldest has waited ADMIT_MAX_WAIT_STEPS steps.
    """
    free = slots - running
    if waiting <= 0 or free <= 0:
        return False
    if running * 2 < slots:
        return True
    return min(waiting, free) >= max(1, slots // ADMIT_GATHER_FRACTION) or waited_steps >= ADMIT_MAX_WAIT_STEPS


def decode_to_end(loop: T5DecodeLoop, seqs: SequenceType[Sequence]) -> list[Sequence]:
    """Run ``seqs`` (alone in ``loop``) until each finishes: a static batch through the iteration-level loop."""
    loop.admit(seqs)
    finished: list[Sequence] = []
    while len(loop):
        finished += loop.step()
    return list(seqs)
