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

- each sequence owns a row of the key/value tensors; its self-attention keys sit at positions
  ``0 .. steps_i`` of that row and its query at ``steps_i``. T5's position bias depends only on
  how far a key is behind the query, so it is gathered per row from one table; positions past a
  row's own are masked. Rows are kept packed: a finished sequence's row is taken by the last
  running one (one row copied, not the batch), a joining one writes rows at the end, and the
  tensors are kept while the loop is busy, so a join or a leave costs what it touches, not the whole cache;
- cross-attention keys/values are computed once per sequence from its encoder output
  (right-padded, masked); T5 adds no position bias there;
- no scaling of q·k (T5 folds it into the weights); softmax of the scores plus bias plus mask;
- hidden states clamped in fp16 after each sub-layer, as T5Block does;
- the decoder output scaled by d_model**-0.5 before lm_head when the checkpoint ties its head
  (``scale_decoder_outputs`` in transformers 5, ``tie_word_embeddings`` in 4.x);
- projections that read the same input run as one matmul (self-attention q/k/v, cross-attention
  k/v, gated feed-forward wi_0/wi_1): their weights become views of one tensor (``fuse_linears``),
  so the model's own forward is unchanged and no memory is added.

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
    steps: int = 0  # decoder tokens fed so far (its positions in the self-attention cache)
    serial: int = -1  # order of admission into its loop (its row moves; this does not)
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
        # per block: the self-attention's q/k/v and the gated feed-forward's wi_0/wi_1 as one matmul each (None: apart)
        self.qkv = [fuse_linears(b.layer[0].SelfAttention, ("q", "k", "v")) for b in self.blocks]
        self.wi = [fuse_linears(b.layer[2].DenseReluDense, ("wi_0", "wi_1")) for b in self.blocks]
        self.cross_kv = [fuse_linears(b.layer[1].EncDecAttention, ("k", "v")) for b in self.blocks]
        self.start_id = int(config.decoder_start_token_id if config.decoder_start_token_id is not None else 0)
        self.pad_id = int(pad_token_id if pad_token_id is not None else (config.pad_token_id or 0))
        self.eos_ids = _eos_ids(model)
        self.generation_config = getattr(model, "generation_config", None)
        self.device = self.embed.weight.device
        self.dtype = self.embed.weight.dtype if self.embed.weight.is_floating_point() else torch.float32
        self.seqs: list[Sequence] = []
        self._bias_table: torch.Tensor | None = None  # [heads, distance]
        self.steps = 0  # decode steps run (all sequences advanced by one token)
        self.admitted = 0  # sequences admitted so far (Sequence.serial)
        self.batch_sizes_total = 0  # sum of the batch sizes of those steps
        self._reset_state()

    # -- state -----------------------------------------------------------------------------------
    # Row i of every buffer belongs to self.seqs[i]; rows len(self.seqs).. are free (stale values, never read
    # unmasked). Buffers grow as _ensure says and are kept while the loop is busy, so a step, a join and a leave
    # copy only what they must: a join writes its rows, a leave moves the last rows into the holes.
    def _reset_state(self) -> None:
        self.seqs = []
        self._rows = self._cols = self._width = 0  # capacity: sequences, decoder positions, encoder positions
        # Stacked over the decoder's layers; [layer][i] belongs to self.seqs[i].
        self.self_k = torch.zeros(0)  # [layers, rows, H, cols, d_kv]: sequence i's self-attention key at position j
        self.self_v = torch.zeros(0)
        self.cross_k = torch.zeros(0)  # [layers, rows, H, width, d_kv]: from sequence i's encoder output
        self.cross_v = torch.zeros(0)
        # [rows, 1, 1, width] additive mask over encoder positions (0 on a sequence's own, most negative past them)
        self.cross_mask = torch.zeros((0, 1, 1, 0), dtype=self.dtype, device=self.device)

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

    def _bias(self, distance: torch.Tensor) -> torch.Tensor:
        """T5's relative position bias [B, H, 1, keys] for queries ``distance`` (>= 0) positions after their keys."""
        keys = distance.shape[1]
        if self._bias_table is None or self._bias_table.shape[1] < keys:
            size = max(64, 1 << (keys - 1).bit_length())
            relative = -torch.arange(size, device=self.device)[None, :]  # key minus query position
            bucket = self.rel._relative_position_bucket(
                relative, bidirectional=False, num_buckets=self.rel.relative_attention_num_buckets,
                max_distance=self.rel.relative_attention_max_distance)
            self._bias_table = self.rel.relative_attention_bias(bucket)[0].permute(1, 0).to(self.dtype)  # [H, size]
        return self._bias_table[:, distance].permute(1, 0, 2)[:, :, None, :]

    def _ensure(self, rows: int, cols: int, width: int, dtype: torch.dtype | None = None) -> None:
        """Grow the buffers to hold ``rows`` sequences, ``cols`` decoder and ``width`` encoder positions; the running
        sequences' rows are carried over. Zeros, so that a masked stale value is never NaN.

        Rows and encoder positions grow to what is needed, no more (a row of a large model's caches is large; they
        grow only when a join brings more rows or a longer input). Decoder positions grow at every step, so they
        double, but never past the longest ``max_new_tokens`` running (a sequence at that length has left)."""
        if rows <= self._rows and cols <= self._cols and width <= self._width:
            return
        b, layers = len(self.seqs), len(self.blocks)
        r, w = max(self._rows, rows), max(self._width, width)
        c = self._cols
        if cols > c:
            longest = max((s.max_new_tokens for s in self.seqs), default=cols)
            c = max(cols, min(max(16, 2 * c), longest))
        like = {"dtype": dtype if dtype is not None else self.self_k.dtype, "device": self.device}
        self_k, self_v = (torch.zeros((layers, r, self.heads, c, self.d_kv), **like) for _ in range(2))
        cross_k, cross_v = (torch.zeros((layers, r, self.heads, w, self.d_kv), **like) for _ in range(2))
        mask = torch.full((r, 1, 1, w), self._neg, dtype=self.dtype, device=self.device)
        if b:
            for new, old in ((self_k, self.self_k), (self_v, self.self_v), (cross_k, self.cross_k),
                             (cross_v, self.cross_v)):
                new[:, :b, :, : old.shape[3]] = old[:, :b]
            mask[:b, ..., : self._width] = self.cross_mask[:b]
        self.self_k, self.self_v, self.cross_k, self.cross_v, self.cross_mask = self_k, self_v, cross_k, cross_v, mask
        self._rows, self._cols, self._width = r, c, w

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
        first = len(self.seqs)
        rows = slice(first, first + n)
        for i, block in enumerate(self.blocks):
            attn, kv = block.layer[1].EncDecAttention, self.cross_kv[i]
            if kv is not None:
                k, v = F.linear(hidden, kv).view(n, longest, 2, self.heads, self.d_kv).unbind(2)
            else:
                k = attn.k(hidden).view(n, longest, self.heads, self.d_kv)
                v = attn.v(hidden).view(n, longest, self.heads, self.d_kv)
            if i == 0:  # room for the first positions too (up to 16: the same growth as every step's)
                self._ensure(first + n, min(16, max(s.max_new_tokens for s in seqs)), longest, k.dtype)
            self.cross_k[i, rows, :, :longest] = k.transpose(1, 2)
            self.cross_v[i, rows, :, :longest] = v.transpose(1, 2)
        self.cross_mask[rows] = self._neg
        self.cross_mask[rows, ..., :longest] = torch.where(mask[:, None, None, :] == 0, self._neg, 0.0)
        for serial, s in enumerate(seqs, start=self.admitted):
            s.serial = serial
        self.admitted += n
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
        self.steps += 1
        self.batch_sizes_total += len(tokens)
        return done + self._retire()

    @torch.inference_mode()  # its row moves write into the inference-mode caches (also when called alone)
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
        """Logits [B, vocab] (float32) for the token after each sequence's last one.

        Sequence i's keys sit at positions 0..steps_i of its own row; its query is at steps_i. T5's self-attention
        bias depends only on how far a key is behind the query, gathered per row; later positions are masked."""
        b, heads, d_kv = len(self.seqs), self.heads, self.d_kv
        keys = 1 + max(s.steps for s in self.seqs)
        width = max(len(s.input_ids) for s in self.seqs)
        self._ensure(b, keys, width)
        state = torch.tensor([[s.generated[-1] if s.generated else self.start_id for s in self.seqs],
                              [s.steps for s in self.seqs]], dtype=torch.long).to(self.device)
        last, pos = state[0], state[1]
        # where each row's new key and value go in a layer's [rows * H * cols, d_kv] view (one index_copy_ each)
        slots = ((torch.arange(b, device=self.device)[:, None] * heads + torch.arange(heads, device=self.device))
                 * self._cols + pos[:, None]).reshape(-1)
        distance = pos[:, None] - torch.arange(keys, device=self.device)[None, :]  # [B, keys] query minus key
        self_bias = self._bias(distance.clamp(min=0)).masked_fill(distance[:, None, None, :] < 0, self._neg)
        cross_bias = self.cross_mask[:b, ..., :width]
        h = self.embed(last)[:, None, :]
        for i, block in enumerate(self.blocks):
            layer = block.layer[0]
            attn = layer.SelfAttention
            x, qkv = layer.layer_norm(h), self.qkv[i]
            if qkv is not None:
                q, k, v = F.linear(x, qkv).view(b, 3, heads * d_kv).unbind(1)
            else:
                q, k, v = attn.q(x)[:, 0], attn.k(x)[:, 0], attn.v(x)[:, 0]
            q = q.view(b, heads, 1, d_kv)
            self.self_k[i].view(-1, d_kv).index_copy_(0, slots, k.reshape(b * heads, d_kv))
            self.self_v[i].view(-1, d_kv).index_copy_(0, slots, v.reshape(b * heads, d_kv))
            out = _attention(q, self.self_k[i][:b, :, :keys], self.self_v[i][:b, :, :keys], self_bias)
            h = self._clamp(h + attn.o(out.transpose(1, 2).reshape(b, 1, heads * d_kv)))
            layer = block.layer[1]
            attn = layer.EncDecAttention
            x = layer.layer_norm(h)
            q = attn.q(x).view(b, 1, heads, d_kv).transpose(1, 2)
            out = _attention(q, self.cross_k[i][:b, :, :width], self.cross_v[i][:b, :, :width], cross_bias)
            h = self._clamp(h + attn.o(out.transpose(1, 2).reshape(b, 1, heads * d_kv)))
            h = self._clamp(self._feed_forward(block.layer[2], h, self.wi[i]))
        h = self.final_norm(h)
        if self.scale is not None:
            h = h * self.scale
        return self.lm_head(h)[:, 0, :].float()

    @staticmethod
    def _feed_forward(layer, h: torch.Tensor, wi: torch.Tensor | None) -> torch.Tensor:
        """T5LayerFF (T5DenseGatedActDense when ``wi`` holds wi_0 and wi_1 together): h + wo(act(wi_0 x) * wi_1 x)."""
        if wi is None:
            return layer(h)
        dense = layer.DenseReluDense
        gate, linear = F.linear(layer.layer_norm(h), wi).chunk(2, dim=-1)
        x = dense.act(gate) * linear
        if x.dtype != dense.wo.weight.dtype and dense.wo.weight.dtype != torch.int8:  # wo kept in fp32 (T4 rule)
            x = x.to(dense.wo.weight.dtype)
        return h + dense.wo(x)

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
        tokens = logits.max(-1).indices.tolist()  # the first of equal maxima, as argmax; twice as fast on CPU
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
        """Remove finished sequences: the last running rows move into their holes (the order of ``seqs`` changes)."""
        if not any(s.finished for s in self.seqs):
            return []
        done = [s for s in self.seqs if s.finished]
        kept = len(self.seqs) - len(done)
        if not kept:
            self._reset_state()
            return done
        holes = [i for i in range(kept) if self.seqs[i].finished]
        movers = [j for j in range(kept, len(self.seqs)) if not self.seqs[j].finished]
        if holes:
            dst = torch.tensor(holes, device=self.device)
            src = torch.tensor(movers, device=self.device)
            for t in (self.self_k, self.self_v, self.cross_k, self.cross_v):
                t[:, dst] = t[:, src]
            self.cross_mask[dst] = self.cross_mask[src]
            for i, j in zip(holes, movers, strict=True):
                self.seqs[i] = self.seqs[j]
        del self.seqs[kept:]
        return done


def _attention(q, k, v, bias):
    """softmax(q·kᵀ + bias)·v with T5's unit scale (the scale is folded into T5's weights)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)


def fuse_linears(module, names: tuple[str, ...]) -> torch.Tensor | None:
    """One weight for ``module``'s bias-free ``nn.Linear`` children ``names`` that read the same input, so that one
    matmul replaces several (fewer, larger calls: faster on a CPU, fewer launches on a GPU).

    The children's weights become row blocks (views) of the returned tensor: no memory is added, and the model's own
    forward (``generate``) computes exactly what it did. None where they are not plain floating-point Linear layers of
    one dtype and device (quantized, or not gated). Calling it again on the same module returns the same tensor.
    """
    layers: list[torch.nn.Linear] = []
    for name in names:
        m = getattr(module, name, None)
        if type(m) is not torch.nn.Linear or m.bias is not None:  # exactly Linear: bitsandbytes' int8 layers subclass it
            return None
        layers.append(m)
    weights = [m.weight for m in layers]
    if len({(w.dtype, w.device) for w in weights}) != 1 or not weights[0].is_floating_point():
        return None
    fused = getattr(module, "_llmdeploy_fused", {}).get(names)
    if fused is not None and all(w.data_ptr() == fused[sum(v.shape[0] for v in weights[:j]):].data_ptr()
                                 for j, w in enumerate(weights)):
        return fused
    with torch.no_grad():
        fused = torch.cat([w.detach() for w in weights])
    start = 0
    for m, w in zip(layers, weights, strict=True):
        m.weight = torch.nn.Parameter(fused[start: start + w.shape[0]], requires_grad=False)
        start += w.shape[0]
    module.__dict__.setdefault("_llmdeploy_fused", {})[names] = fused
    return fused


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
