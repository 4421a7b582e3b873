"""DJL Serving contract, batching per request, one generate per batch, truncation, OOM split."""

from __future__ import annotations

import json
import logging
import re

import pytest
from djl_double import Input, Output

from llmdeploy.handlers.batching import is_out_of_memory, run_with_oom_split
from llmdeploy.handlers.lmi_service import Seq2SeqService

P4 = {"max_new_tokens": 4, "min_new_tokens": 4}


def test_init_call_returns_none_and_properties_parsed_once(tiny_model_dir):
    loads = []

    def loader(cfg):
        loads.append(cfg)
        from conftest import FakeEngine

        return FakeEngine()

    service = Seq2SeqService(engine_loader=loader)
    assert service.handle(Input({"option.model_id": str(tiny_model_dir), "batch_size": "4"}), Output) is None
    first = service.config
    assert first.batch_size == 4 and service.properties_parsed == 1 and len(loads) == 1
    out = service.handle(Input.batch([{"inputs": "a"}], {"batch_size": "1", "option.dtype": "fp16"}), Output)
    assert service.config is first and service.properties_parsed == 1 and len(loads) == 1
    assert out.json_items()["batch_0.data"] == {"generated_text": "echo:a:64"}


def test_batch_with_one_bad_request_answers_the_others(tiny_model_dir, tiny_engine):
    service = Seq2SeqService(engine=tiny_engine)
    service.handle(Input({"option.model_id": str(tiny_model_dir), "option.max_new_tokens": "16"}), Output)
    calls = tiny_engine.generate_calls
    bodies = [
        {"inputs": "w1 w2 w3", "parameters": P4},
        {"inputs": "w4", "parameters": {"max_new_tokens": "lots"}},       # ill-typed
        b"{not json",                                                    # invalid JSON
        {"inputs": ["w5 w6", "w7 w8 w9 w10"], "parameters": P4},
        {"inputs": "w11", "parameters": {"temperature": 0.5, "bogus": 1}},  # unknown param
        {"inputs": "w12", "parameters": P4},
    ]
    out = service.handle(Input.batch(bodies), Output)
    items = out.json_items()
    assert set(items) == {f"batch_{i}.data" for i in range(6)}
    # what DJL's PyPredictor.java requires: one content entry per request, keys batch_<i>.<name>
    assert len(out.content) == 6 and all(re.fullmatch(r"batch_(\d+)\.(.*)", k) for k, _ in out.content)
    assert out.code == 200  # the batch's code is shared by every item; per-item errors are in the body
    for bad in (1, 2, 4):
        assert items[f"batch_{bad}.data"]["code"] == 400 and items[f"batch_{bad}.data"]["error"]
    assert "not valid JSON" in items["batch_2.data"]["error"]
    assert "bogus" in items["batch_4.data"]["error"]
    assert isinstance(items["batch_0.data"], dict) and "generated_text" in items["batch_0.data"]
    assert isinstance(items["batch_3.data"], list) and len(items["batch_3.data"]) == 2
    assert "generated_text" in items["batch_5.data"]
    # the four good texts share identical params: ONE padded generate call
    assert tiny_engine.generate_calls == calls + 1
    assert tiny_engine.batch_sizes[-1] == 4
    assert out.properties["batch_0_Content-Type"] == "application/json"


def test_single_non_batch_request_error_sets_code(fake_service):
    service = fake_service()
    out = service.handle(Input.single({"inputs": 5}), Output)
    assert out.code == 400 and json.loads(out.content[0][1])["code"] == 400
    ok = service.handle(Input.single({"inputs": "hi"}), Output)
    assert ok.code == 200 and json.loads(ok.content[0][1]) == {"generated_text": "echo:hi:32"}


def test_different_params_go_in_separate_generate_calls(fake_service):
    service = fake_service()
    bodies = [{"inputs": "a", "parameters": {"max_new_tokens": 5}},
              {"inputs": "b", "parameters": {"max_new_tokens": 6}},
              {"inputs": "c", "parameters": {"max_new_tokens": 5}},
              {"inputs": "d"}]
    items = service.handle(Input.batch(bodies), Output).json_items()
    assert [items[f"batch_{i}.data"]["generated_text"] for i in range(4)] == \
        ["echo:a:5", "echo:b:6", "echo:c:5", "echo:d:32"]
    assert sorted(len(texts) for texts, _ in service.engine.calls) == [1, 1, 2]


def test_generated_token_counts_follow_params(tiny_engine):
    ids = tiny_engine.generate_ids(["w1 w2 w3", "w4"], {"max_new_tokens": 5, "min_new_tokens": 5})
    assert [len(row) for row in ids] == [5, 5]
    assert [len(row) for row in tiny_engine.generate_ids(["w1"], {"max_new_tokens": 3, "min_new_tokens": 3})] == [3]


def test_long_input_truncated_to_context_with_warning(tiny_engine, caplog):
    long_text = " ".join(f"w{i % 200}" for i in range(700))
    with caplog.at_level(logging.WARNING, logger="llmdeploy.handlers.seq2seq"):
        ids = tiny_engine.encode([long_text, "w1 w2"])
    assert tiny_engine.max_input_tokens == 512
    assert len(ids[0]) == 512 and ids[0][-1] == tiny_engine.tokenizer.eos_token_id
    assert len(ids[1]) == 3
    assert any("truncated" in r.getMessage() and "701" in r.getMessage() for r in caplog.records)
    out = tiny_engine.generate_ids([long_text], {"max_new_tokens": 2, "min_new_tokens": 2})
    assert len(out[0]) == 2


def test_oom_batch_is_split_in_halves(fake_service):
    service = fake_service(oom_above=2)
    bodies = [{"inputs": f"t{i}", "parameters": {"max_new_tokens": 3}} for i in range(7)]
    items = service.handle(Input.batch(bodies), Output).json_items()
    assert [items[f"batch_{i}.data"]["generated_text"] for i in range(7)] == [f"echo:t{i}:3" for i in range(7)]
    sizes = [len(texts) for texts, _ in service.engine.calls]
    assert sizes[0] == 7 and max(sizes[1:]) <= 4
    assert service.split_batches == [7, 3, 4]  # 7 -> 3+4, then 3 -> 1+2, 4 -> 2+2


def test_oom_on_a_single_input_fails_only_that_input():
    def run(items):
        if "huge" in items:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x.upper() for x in items]

    results = run_with_oom_split(["a", "huge", "b", "c"], run)
    assert results[0] == "A" and results[2:] == ["B", "C"]
    assert isinstance(results[1], Exception) and getattr(results[1], "code") == 507


def test_torch_oom_type_recognised_and_other_errors_propagate():
    import torch

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("boom"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    with pytest.raises(ValueError):
        run_with_oom_split([1, 2], lambda items: (_ for _ in ()).throw(ValueError("bug")))


def test_non_oom_failure_fails_that_group_only(fake_service):
    service = fake_service()
    original = service.engine.generate

    def flaky(texts, params):
        if params["max_new_tokens"] == 7:
            raise RuntimeError("kernel exploded")
        return original(texts, params)

    service.engine.generate = flaky
    items = service.handle(Input.batch([{"inputs": "a", "parameters": {"max_new_tokens": 7}},
                                        {"inputs": "b"}]), Output).json_items()
    assert items["batch_0.data"]["code"] == 500 and "kernel exploded" in items["batch_0.data"]["error"]
    assert items["batch_1.data"] == {"generated_text": "echo:b:32"}


def test_real_engine_oom_split_answers_every_request(tiny_model_dir, tiny_engine, monkeypatch):
    """The transformers engine's generate raising CUDA-style OOM above 2 inputs: all 5 still answered."""
    service = Seq2SeqService(engine=tiny_engine)
    service.handle(Input({"option.model_id": str(tiny_model_dir), "option.max_new_tokens": "16"}), Output)
    real_generate = tiny_engine.model.generate
    sizes = []

    def generate(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real_generate(**kwargs)

    monkeypatch.setattr(tiny_engine.model, "generate", generate)
    bodies = [{"inputs": f"w{i} w{i + 1}", "parameters": P4} for i in range(5)]
    items = service.handle(Input.batch(bodies), Output).json_items()
    assert all("generated_text" in items[f"batch_{i}.data"] for i in range(5))
    assert sizes == [5, 2, 3, 1, 2]
