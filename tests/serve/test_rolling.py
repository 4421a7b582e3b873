"""The handler under DJL's rolling batch (RollingBatch.java, mirrored by djl_double.Djl.rolling): one call per step."""

from __future__ import annotations

import pytest
import torch
from conftest import djl_for, serving_properties
from djl_double import HttpRequest

from llmdeploy.handlers.decode import ADMIT_MAX_WAIT_STEPS, admission_due
from llmdeploy.handlers.lmi_service import Seq2SeqService


def body(text, **params):
    return HttpRequest.json({"inputs": text, "parameters": {"max_new_tokens": 6, **params}})


def rolling_djl(model_dir, engine, slots: int):
    """The handler behind the DJL double in rolling batch with ``slots`` slots: (djl, service)."""
    service = Seq2SeqService(engine=engine)
    djl = djl_for(service)
    init = djl.initialize(serving_properties(rolling=True, model_id=str(model_dir), max_new_tokens=16,
                                             max_rolling_batch_size=slots, max_request_tokens=256))
    assert init.code == 204 and service.config.rolling_batch and service.config.max_batch_size == slots
    return djl, service


@pytest.fixture
def djl(tiny_model_dir, tiny_engine):
    return rolling_djl(tiny_model_dir, tiny_engine, 4)[0]


def generate(engine, text, n):
    ids = engine.generate_ids([text], {"max_new_tokens": n})
    return engine.decode(ids)[0]


def test_requests_joining_mid_decode_get_generates_answer(djl, tiny_engine):
    arrivals = {0: [body("w1 w2 w3"), body("w4", max_new_tokens=2)], 2: [body("w10 w20")], 5: [body("w5 w9 w11")]}
    answers = djl.rolling(arrivals)
    texts = [("w1 w2 w3", 6), ("w4", 2), ("w10 w20", 6), ("w5 w9 w11", 6)]
    assert [a.status for a in answers] == [200] * 4
    assert [a.json() for a in answers] == [{"generated_text": generate(tiny_engine, t, n)} for t, n in texts]
    assert all(a.headers == {"Content-Type": "application/json"} for a in answers)
    # one Java step per token: the short request left after 2 steps, the late ones joined the running batch
    assert djl.steps[:3] == [2, 2, 2] and max(djl.steps) == 3 and len(djl.steps) == 11


def test_bad_requests_fail_alone_with_their_own_status(djl):
    answers = djl.rolling({0: [body("w1"), HttpRequest.json(b"{nope"), HttpRequest.json({"inputs": 3})],
                           1: [body("w2", num_beams=9), body("w3", max_new_tokens=16, num_beams=4),
                               HttpRequest.json({"inputs": ["w1"] * 40, "parameters": {"max_new_tokens": 16}})]})
    assert [a.status for a in answers] == [200, 400, 400, 400, 200, 400]
    assert "not valid JSON" in answers[1].json()["error"] and "cap of 4" in answers[3].json()["error"]
    assert "budget of 256" in answers[5].json()["error"]  # 40 inputs x 16 tokens = 640
    assert set(answers[4].json()) == {"generated_text"}  # beam search runs alone, inside one step


def test_a_failed_step_fails_its_requests_and_the_next_one_starts_clean(djl, tiny_engine, monkeypatch):
    real = tiny_engine.decode_loop

    def broken_loop():
        loop = real()
        loop._forward = lambda: (_ for _ in ()).throw(RuntimeError("kernel exploded"))
        return loop

    service = Seq2SeqService(engine=tiny_engine)
    monkeypatch.setattr(tiny_engine, "decode_loop", broken_loop)
    bad = djl_for(service)
    bad.initialize(serving_properties(rolling=True, model_id="x", max_new_tokens=16))
    (a, b) = bad.rolling({0: [body("w1"), body("w2")]})
    assert a.status == b.status == 500 and "kernel exploded" in a.json()["error"]


def test_out_of_memory_fails_the_newest_half_only(djl, tiny_engine, monkeypatch):
    calls = {"n": 0}
    real_loop = tiny_engine.decode_loop

    def oom_once():
        loop = real_loop()
        forward = loop._forward

        def flaky():
            calls["n"] += 1
            if calls["n"] == 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return forward()

        loop._forward = flaky
        return loop

    monkeypatch.setattr(tiny_engine, "decode_loop", oom_once)
    fresh = djl_for(Seq2SeqService(engine=tiny_engine))
    fresh.initialize(serving_properties(rolling=True, model_id="x", max_new_tokens=16))
    answers = fresh.rolling({0: [body("w1"), body("w2"), body("w3"), body("w4")]})
    assert [a.status for a in answers] == [200, 200, 507, 507]
    assert all("out of memory" in a.json()["error"] for a in answers[2:])


def test_static_engines_refuse_rolling_batch_at_init():
    from conftest import FakeEngine

    djl = djl_for(Seq2SeqService(engine_loader=lambda cfg: FakeEngine()))
    with pytest.raises(RuntimeError, match="Failed to initialize model"):  # the worker fails at start, clearly
        djl.initialize(serving_properties(rolling=True))


def _record_admissions(service, monkeypatch) -> list[tuple[int, int]]:
    """(decode step, sequences) of every admit() of the service's rolling batch."""
    loop = service._rolling.loop
    calls, admit = [], loop.admit
    monkeypatch.setattr(loop, "admit", lambda seqs: (calls.append((loop.steps, len(seqs))), admit(seqs))[1])
    return calls


@pytest.fixture
def djl8(tiny_model_dir, tiny_engine):
    return rolling_djl(tiny_model_dir, tiny_engine, 8)


@pytest.mark.parametrize(("late", "joins_at"), [(1, 2 + ADMIT_MAX_WAIT_STEPS), (2, 2)])
def test_newcomers_to_a_busy_batch_gather_for_one_encoder_call(djl8, tiny_engine, monkeypatch, late, joins_at):
    """6 of 8 slots busy: one newcomer waits (at most ADMIT_MAX_WAIT_STEPS steps) for others to share its encoder
    call; two (a quarter of the slots) join at once. Either way every answer is what generate gives alone."""
    djl, service = djl8
    admissions = _record_admissions(service, monkeypatch)
    first = [(f"w{i} w{i + 1}", 16) for i in range(6)]
    then = [(f"w{40 + i}", 4) for i in range(late)]
    answers = djl.rolling({0: [body(t, max_new_tokens=n) for t, n in first],
                           2: [body(t, max_new_tokens=n) for t, n in then]})
    assert admissions == [(0, 6), (joins_at, late)]
    assert [a.json() for a in answers] == [{"generated_text": generate(tiny_engine, t, n)} for t, n in first + then]


@pytest.mark.parametrize(("waiting", "running", "slots", "waited", "due"), [
    (1, 0, 32, 0, True),     # idle: at once
    (1, 15, 32, 0, True),    # under half full: latency first
    (1, 24, 32, 0, False),   # busy: gather...
    (1, 24, 32, ADMIT_MAX_WAIT_STEPS, True),  # ...for a bounded number of steps
    (8, 24, 32, 0, True),    # a quarter of the slots fills in one encoder call
    (3, 29, 32, 0, False),   # all that is free, but too few to be worth a call yet
    (5, 32, 32, 99, False),  # no free slot
    (0, 10, 32, 99, False),  # nobody waiting
    (1, 3, 4, 0, True),      # tiny batches: a quarter is one
])
def test_admission_policy(waiting, running, slots, waited, due):
    assert admission_due(waiting, running, slots, waited) is due
