"""The iteration-level T5 loop against transformers' own generate (run under both transformers majors in CI)."""

from __future__ import annotations

import time

import pytest
import torch

from llmdeploy.handlers.decode import Sequence, T5DecodeLoop

TEXTS = ["w1 w2 w3", "w4", "w10 w20 w30 w40 w50 w60 w70", "w5 w9", "w100 w101 w102 w103", "w7 w7 w7 w8"]


@pytest.fixture(scope="module")
def ids(tiny_engine):
    return tiny_engine.encode(TEXTS)


def reference(engine, input_ids, **kwargs) -> list[int]:
    """generate() on this input alone; its tokens up to and including EOS."""
    with torch.inference_mode():
        out = engine.model.generate(input_ids=torch.tensor([input_ids]), do_sample=False, **kwargs)[0, 1:].tolist()
    eos = engine.model.generation_config.eos_token_id
    return out[: out.index(eos) + 1] if eos in out else out


def run(loop, schedule: dict[int, list[Sequence]]) -> None:
    """Admit schedule[step] before that step; step until every sequence is done."""
    step = 0
    while schedule or len(loop):
        loop.admit(schedule.pop(step, []))
        if len(loop):
            loop.step()
        step += 1


def test_greedy_equals_generate_when_sequences_join_mid_decode(tiny_engine, ids):
    want = [reference(tiny_engine, row, max_new_tokens=10) for row in ids]
    seqs = [Sequence(row, {"max_new_tokens": 10}) for row in ids]
    loop = T5DecodeLoop(tiny_engine.model)
    run(loop, {0: seqs[:2], 3: seqs[2:4], 4: seqs[4:5], 9: seqs[5:]})  # joins while others are 3, 4 and 9 deep
    assert [s.generated for s in seqs] == want
    assert loop.steps >= 10 and len(loop) == 0


def test_each_sequence_stops_at_its_own_length_and_frees_its_slot(tiny_engine, ids):
    lengths = [1, 7, 3, 12, 5, 2]
    seqs = [Sequence(row, {"max_new_tokens": n}) for row, n in zip(ids, lengths, strict=False)]
    loop = T5DecodeLoop(tiny_engine.model)
    loop.admit(seqs)
    sizes = []
    while len(loop):
        sizes.append(len(loop))
        loop.step()
    assert [len(s.generated) for s in seqs] == lengths
    assert sizes == [sum(n >= k for n in lengths) for k in range(1, 13)]  # rows leave as they finish
    for s, row, n in zip(seqs, ids, lengths, strict=False):  # leaving (and the cache compaction) changes no one's tokens
        assert s.generated == reference(tiny_engine, row, max_new_tokens=n)


def test_a_sequence_ends_at_eos(tiny_engine, ids):
    """With a token the model emits as EOS, the sequence ends right after it, as generate's does."""
    free = reference(tiny_engine, ids[0], max_new_tokens=8)
    eos = free[2]
    want = reference(tiny_engine, ids[0], max_new_tokens=8, eos_token_id=eos)
    loop = T5DecodeLoop(tiny_engine.model)
    loop.eos_ids = (eos,)
    (seq,) = [Sequence(ids[0], {"max_new_tokens": 8})]
    run(loop, {0: [seq]})
    assert seq.generated == want and seq.generated[-1] == eos and len(seq.generated) <= 3


@pytest.mark.parametrize("params", [
    {"repetition_penalty": 1.8}, {"no_repeat_ngram_size": 2}, {"min_new_tokens": 6, "repetition_penalty": 0.7},
])
def test_processors_match_generate(tiny_engine, ids, params):
    want = [reference(tiny_engine, row, max_new_tokens=8, **params) for row in ids]
    seqs = [Sequence(row, {"max_new_tokens": 8, **params}) for row in ids]
    plain = [Sequence(row, {"max_new_tokens": 8}) for row in ids]  # greedy neighbours in the same batch
    run(T5DecodeLoop(tiny_engine.model), {0: seqs[:3] + plain[:3], 2: seqs[3:] + plain[3:]})
    assert [s.generated for s in seqs] == want
    assert [s.generated for s in plain] == [reference(tiny_engine, row, max_new_tokens=8) for row in ids]


def test_sampling_follows_its_parameters(tiny_engine, ids):
    """top_k=1 sampling is greedy; a sampled token is always inside the request's top-k set; seeds reproduce."""
    loop = T5DecodeLoop(tiny_engine.model)
    greedy = Sequence(ids[2], {"max_new_tokens": 6, "do_sample": True, "top_k": 1, "temperature": 0.5})
    run(loop, {0: [greedy]})
    assert greedy.generated == reference(tiny_engine, ids[2], max_new_tokens=6)

    logits = torch.randn(1, tiny_engine.model.config.vocab_size)
    seq = Sequence(ids[0], {"max_new_tokens": 1, "do_sample": True, "top_k": 5, "temperature": 2.0})
    allowed = set(torch.topk(logits[0], 5).indices.tolist())
    loop.seqs = [seq]
    picks = {loop._choose(logits.clone())[0] for _ in range(200)}
    assert picks <= allowed and len(picks) > 1
    nucleus = Sequence(ids[0], {"max_new_tokens": 1, "do_sample": True, "top_p": 1e-6})
    loop.seqs = [nucleus]
    assert {loop._choose(logits.clone())[0] for _ in range(20)} == {int(logits[0].argmax())}
    loop.seqs = []

    def sample(seed):
        torch.manual_seed(seed)
        s = Sequence(ids[1], {"max_new_tokens": 8, "do_sample": True})
        run(T5DecodeLoop(tiny_engine.model), {0: [s]})
        return s.generated

    assert sample(3) == sample(3)


def test_cancelled_and_late_sequences_leave_at_the_next_step(tiny_engine, ids):
    loop = T5DecodeLoop(tiny_engine.model)
    keep, gone, late = (Sequence(ids[0], {"max_new_tokens": 12}), Sequence(ids[1], {"max_new_tokens": 12}),
                        Sequence(ids[2], {"max_new_tokens": 12}, deadline=time.monotonic() + 3600))
    loop.admit([keep, gone, late])
    loop.step()
    gone.cancel()
    late.deadline = time.monotonic() - 1
    done = loop.step()
    assert set(done) == {gone, late} and len(gone.generated) == len(late.generated) == 1
    assert late.timed_out and not gone.timed_out and len(loop) == 1
    run(loop, {})
    assert keep.generated == reference(tiny_engine, ids[0], max_new_tokens=12)


def test_reset_drops_every_running_sequence(tiny_engine, ids):
    loop = T5DecodeLoop(tiny_engine.model)
    seqs = [Sequence(row, {"max_new_tokens": 5}) for row in ids[:3]]
    loop.admit(seqs)
    loop.step()
    assert loop.reset() == seqs and len(loop) == 0
    fresh = Sequence(ids[3], {"max_new_tokens": 5})
    run(loop, {0: [fresh]})
    assert fresh.generated == reference(tiny_engine, ids[3], max_new_tokens=5)


def test_many_joins_and_leaves_keep_every_sequence_exact_and_the_buffers_bounded(tiny_engine, ids):
    """Sequences of many lengths join a loop of at most 5 as others leave (rows move into the holes they leave):
    each one's tokens are still generate's, and the key/value tensors grow to what the busiest step needs, no more."""
    lengths = [3, 11, 1, 7, 14, 2, 9, 5, 12, 4, 1, 8, 6, 13]
    pending = [Sequence(ids[k % len(ids)], {"max_new_tokens": n}) for k, n in enumerate(lengths)]
    seqs = list(pending)
    loop = T5DecodeLoop(tiny_engine.model)
    most_rows = 0
    while pending or len(loop):
        if pending and len(loop) < 5:
            joining = pending[: min(2, 5 - len(loop))]
            pending = pending[len(joining):]
            loop.admit(joining)
        most_rows = max(most_rows, len(loop))
        loop.step()
    for s, n in zip(seqs, lengths, strict=True):
        assert s.generated == reference(tiny_engine, s.input_ids, max_new_tokens=n), n
    assert most_rows == 5 and loop._rows == 0  # released when the last one left
    assert loop.steps < sum(lengths)  # they shared steps


def test_buffers_grow_only_as_far_as_the_running_sequences_can_need(tiny_engine, ids):
    """Rows and encoder positions: what the joins need. Decoder positions: doubling, capped at the longest
    max_new_tokens running (a row never holds more keys than that)."""
    loop = T5DecodeLoop(tiny_engine.model)
    loop.admit([Sequence(row, {"max_new_tokens": 40}) for row in ids[:3]])
    longest_input = max(len(row) for row in ids[:3])
    assert (loop._rows, loop._width, loop._cols) == (3, longest_input, 16)
    for _ in range(20):
        loop.step()
    assert loop._cols == 32 and loop._rows == 3  # 21 positions: doubled once
    for _ in range(13):
        loop.step()
    assert loop._cols == 40  # 33 positions: doubling would give 64, but none of them runs past 40
    loop.admit([Sequence(row, {"max_new_tokens": 40}) for row in ids * 2])  # 3 + 12 rows
    assert loop._rows == 15 and loop._width == max(len(row) for row in ids) and loop._cols == 40
    while len(loop):
        loop.step()
    assert loop._rows == 0  # released when the last one left


def test_fused_projections_change_nothing_generate_computes(tiny_config):
    """The loop runs q/k/v, cross k/v and wi_0/wi_1 as one matmul each over views of one weight: generate's ids are
    the same before and after, no weight is copied twice, and a second loop reuses the same tensors."""
    from transformers import T5ForConditionalGeneration

    from llmdeploy.handlers.decode import fuse_linears

    model = T5ForConditionalGeneration.from_pretrained(tiny_config.model_location()).eval()
    inputs = torch.tensor([[5, 6, 7, 8, 1]])
    with torch.inference_mode():
        before = model.generate(input_ids=inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    weights = sum(p.numel() for p in model.parameters())
    loop = T5DecodeLoop(model)
    attn = model.get_decoder().block[0].layer[0].SelfAttention
    fused = loop.qkv[0]
    assert fused is not None and fused.shape[0] == 3 * attn.q.weight.shape[0]
    assert attn.k.weight.data_ptr() == fused[attn.q.weight.shape[0]:].data_ptr()
    assert sum(p.numel() for p in model.parameters()) == weights
    assert fuse_linears(attn, ("q", "k", "v")) is fused and T5DecodeLoop(model).qkv[0] is fused
    with torch.inference_mode():
        after = model.generate(input_ids=inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert torch.equal(before, after)
    seq = Sequence(inputs[0].tolist(), {"max_new_tokens": 12, "min_new_tokens": 12})
    run(loop, {0: [seq]})
    assert seq.generated == before[0, 1:].tolist()


def test_layers_that_cannot_be_fused_run_apart(tiny_config):
    """A projection that is not a plain nn.Linear (bitsandbytes' int8 layers subclass it) is called as it is."""
    from transformers import T5ForConditionalGeneration

    class Wrapped(torch.nn.Linear):
        pass

    model = T5ForConditionalGeneration.from_pretrained(tiny_config.model_location()).eval()
    for block in model.get_decoder().block:
        for module, name in ((block.layer[0].SelfAttention, "v"), (block.layer[2].DenseReluDense, "wi_1"),
                             (block.layer[1].EncDecAttention, "k")):
            old = getattr(module, name)
            new = Wrapped(old.in_features, old.out_features, bias=False)
            new.weight = old.weight
            setattr(module, name, new)
    loop = T5DecodeLoop(model)
    assert loop.qkv == loop.wi == loop.cross_kv == [None] * len(loop.blocks)
    inputs = [5, 6, 7, 8, 1]
    with torch.inference_mode():
        want = model.generate(input_ids=torch.tensor([inputs]), max_new_tokens=10, min_new_tokens=10)[0, 1:].tolist()
    seq = Sequence(inputs, {"max_new_tokens": 10, "min_new_tokens": 10})
    run(loop, {0: [seq]})
    assert seq.generated == want
