"""DJL Serving contract (through djl_double's mirror of the real engine), batching, truncation, OOM split."""

from __future__ import annotations

import logging

import pytest
from conftest import djl_for, serving_properties
from djl_double import HttpRequest

from llmdeploy.handlers.batching import is_out_of_memory, run_with_oom_split
from llmdeploy.handlers.lmi_service import Seq2SeqService

P4 = {"max_new_tokens": 4, "min_new_tokens": 4}


def requests(*bodies):
    return [HttpRequest.json(b) for b in bodies]


def test_init_call_loads_once_and_answers_204(tiny_model_dir):
    loads = []

    def loader(cfg):
        loads.append(cfg)
        from conftest import FakeEngine

        return FakeEngine()

    service = Seq2SeqService(engine_loader=loader)
    djl = djl_for(service, model_dir="/srv/model")
    init = djl.initialize(serving_properties(model_id=str(tiny_model_dir), max_new_tokens=64))
    assert (init.code, init.message, init.content) == (204, "No content", [])  # the engine's answer to None
    first = service.config
    assert first.model_id == str(tiny_model_dir) and first.max_new_tokens_cap == 64
    assert first.model_dir == "/srv/model", "ModelService.invoke_handler passes model_dir on every call"
    assert service.properties_parsed == 1 and len(loads) == 1
    (resp,) = djl.predict(requests({"inputs": "a"}))
    (again,) = djl.predict(requests({"inputs": "b"}))
    assert service.config is first and service.properties_parsed == 1 and len(loads) == 1
    assert resp.status == 200 and resp.json() == {"generated_text": "echo:a:64"}
    assert again.json() == {"generated_text": "echo:b:64"}


def test_bad_serving_properties_fail_the_worker_at_init():
    djl = djl_for(Seq2SeqService())
    with pytest.raises(RuntimeError, match="Failed to initialize model: invoke handler failure"):
        djl.initialize(serving_properties(dtype="fp8"))


def test_predicting_before_initialize_says_so_instead_of_an_attribute_error():
    # predict_json used to hand config=None to parse_request, which died with "'NoneType' object has no attribute
    # 'max_inputs'" (found by mypy on handlers/); now it is one HandlerError naming the missing step.
    from conftest import FakeEngine

    from llmdeploy.handlers.serving_config import HandlerError

    service = Seq2SeqService(engine=FakeEngine())
    with pytest.raises(HandlerError, match=r"not initialised: call initialize\(properties\) before predicting"):
        service.predict_json([{"inputs": "a"}])
    service.initialize({"option.max_new_tokens": "8"})
    assert service.predict_json([{"inputs": "a"}]) == [{"generated_text": "echo:a:8"}]


def test_batch_with_bad_requests_answers_each_with_200_and_its_own_body(tiny_model_dir, tiny_engine):
    service = Seq2SeqService(engine=tiny_engine)
    djl = djl_for(service)
    djl.initialize(serving_properties(model_id=str(tiny_model_dir), max_new_tokens=16))
    calls = tiny_engine.generate_calls
    bodies = [
        {"inputs": "w1 w2 w3", "parameters": P4},
        {"inputs": "w4", "parameters": {"max_new_tokens": "lots"}},       # ill-typed
        b"{not json",                                                    # invalid JSON
        {"inputs": ["w5 w6", "w7 w8 w9 w10"], "parameters": P4},
        {"inputs": "w11", "parameters": {"temperature": 0.5, "bogus": 1}},  # unknown param
        {"inputs": "w12", "parameters": P4},
    ]
    answers = djl.predict(requests(*bodies))  # PyPredictor splits it; a size mismatch would raise
    # Every request gets the batch's status and headers: a bad request's own 400 lives in its body only.
    assert [a.status for a in answers] == [200] * 6
    assert all(a.headers == {"Content-Type": "application/json"} for a in answers)
    bodies_out = [a.json() for a in answers]
    for bad in (1, 2, 4):
        assert bodies_out[bad]["code"] == 400 and bodies_out[bad]["error"]
    assert "not valid JSON" in bodies_out[2]["error"]
    assert "bogus" in bodies_out[4]["error"]
    assert set(bodies_out[0]) == {"generated_text"}
    assert isinstance(bodies_out[3], list) and len(bodies_out[3]) == 2
    assert set(bodies_out[5]) == {"generated_text"}
    # the four good texts share identical params: ONE padded generate call
    assert tiny_engine.generate_calls == calls + 1
    assert tiny_engine.batch_sizes[-1] == 4


def test_a_request_alone_gets_its_own_status(fake_service):
    """DJL does not wrap a batch of one, so a lone malformed request is answered 400."""
    djl = djl_for(fake_service())
    djl.initialize(serving_properties())
    (bad,) = djl.predict(requests({"inputs": 5}))
    assert bad.status == 400 and bad.json()["code"] == 400 and "'inputs' must be" in bad.json()["error"]
    assert bad.headers == {"Content-Type": "application/json"}
    (ok,) = djl.predict(requests({"inputs": "hi"}))
    assert ok.status == 200 and ok.json() == {"generated_text": "echo:hi:32"}
    (text,) = djl.predict([HttpRequest(b"plain words", {"content-type": "text/plain"})])
    assert text.json() == {"generated_text": "echo:plain words:32"}


def test_an_error_message_never_carries_a_line_break_into_the_status_line(fake_service):
    """DJL turns Output.message into the HTTP reason phrase; 0.36's Output.send no longer strips CR/LF."""
    service = fake_service()

    def broken(texts, params):
        raise RuntimeError("CUDA error: device-side assert\r\nSet-Cookie: x=1")

    service.engine.generate = broken
    djl = djl_for(service)
    djl.initialize(serving_properties())
    out = djl.call({"Content-Type": "application/json"}, [("data", b'{"inputs": "a"}')])
    assert out.code == 500 and "\r" not in out.message and "\n" not in out.message
    assert "Set-Cookie" in out.get_data().decode()  # the whole text stays in the JSON body


def test_lengths_share_a_generate_call_other_params_do_not(fake_service):
    """Rows differing only in max_new_tokens / min_new_tokens share one call (each keeps its own); a different
    temperature or beam search (whose rows share their lengths too) gets a call of its own."""
    service = fake_service()
    djl = djl_for(service)
    djl.initialize(serving_properties())
    answers = djl.predict(requests({"inputs": "a", "parameters": {"max_new_tokens": 5}},
                                   {"inputs": "b", "parameters": {"max_new_tokens": 6, "min_new_tokens": 2}},
                                   {"inputs": "c", "parameters": {"max_new_tokens": 5}},
                                   {"inputs": "d"},
                                   {"inputs": "e", "parameters": {"do_sample": True, "temperature": 0.7}},
                                   {"inputs": "f", "parameters": {"num_beams": 2, "max_new_tokens": 5}},
                                   {"inputs": "g", "parameters": {"num_beams": 2, "max_new_tokens": 6}}))
    assert [a.json()["generated_text"] for a in answers] == \
        ["echo:a:5", "echo:b:6", "echo:c:5", "echo:d:32", "echo:e:32", "echo:f:5", "echo:g:6"]
    assert sorted(texts for texts, _ in service.engine.calls) == [["a", "b", "c", "d"], ["e"], ["f"], ["g"]]


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
    djl = djl_for(service)
    djl.initialize(serving_properties())
    answers = djl.predict(requests(*[{"inputs": f"t{i}", "parameters": {"max_new_tokens": 3}} for i in range(7)]))
    assert [a.json()["generated_text"] for a in answers] == [f"echo:t{i}:3" for i in range(7)]
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
    assert isinstance(results[1], Exception) and results[1].code == 507


def test_torch_oom_type_recognised_and_other_errors_propagate():
    import torch

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("boom"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    with pytest.raises(ValueError):
        run_with_oom_split([1, 2], lambda items: (_ for _ in ()).throw(ValueError("bug")))


def test_non_oom_failure_fails_that_group_only(fake_service):
    service = fake_service()
    original = service.engine.generate

    def flaky(texts, params, stop=None):
        if params[0].get("num_beams") == 2:
            raise RuntimeError("kernel exploded")
        return original(texts, params, stop)

    service.engine.generate = flaky
    djl = djl_for(service)
    djl.initialize(serving_properties())
    first, second = djl.predict(requests({"inputs": "a", "parameters": {"num_beams": 2}}, {"inputs": "b"}))
    assert first.status == 200 and first.json()["code"] == 500 and "kernel exploded" in first.json()["error"]
    assert second.json() == {"generated_text": "echo:b:32"}


def test_real_engine_oom_split_answers_every_request(tiny_model_dir, tiny_engine, monkeypatch):
    """The transformers engine's generate raising CUDA-style OOM above 2 inputs: all 5 still answered."""
    service = Seq2SeqService(engine=tiny_engine)
    djl = djl_for(service)
    djl.initialize(serving_properties(model_id=str(tiny_model_dir), max_new_tokens=16))
    real_generate = tiny_engine.model.generate
    sizes = []

    def generate(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real_generate(**kwargs)

    monkeypatch.setattr(tiny_engine.model, "generate", generate)
    answers = djl.predict(requests(*[{"inputs": f"w{i} w{i + 1}", "parameters": P4} for i in range(5)]))
    assert all("generated_text" in a.json() for a in answers)
    assert sizes == [5, 2, 3, 1, 2]


def test_the_double_mirrors_the_pinned_lmi_engine():
    """djl_double.py names the djl-serving branch it mirrors: the pinned LMI version's recipe."""
    import djl_double

    from llmdeploy.lmi import load_lmi_table

    table = load_lmi_table()
    assert table.versions[table.default].branch == djl_double.DJL_SERVING_BRANCH, \
        "re-read djl_python at the new pin's branch and update the double (then its branch name)"
    assert table.versions[table.tested_lmi_version].branch in djl_double.ALSO_READ


def mixed_lengths(ends: list[int | None] | None = None, n: int = 12) -> tuple[list[str], list[dict]]:
    """Texts with lengths of their own: max_new_tokens 2..13, a third of them with a min_new_tokens too.

    ``ends``: the tokens each text makes before its EOS given only its max_new_tokens (None: no early EOS). Every
    other text that ends early then gets a min_new_tokens past that end, so its minimum decides its tokens; the
    others that end early get none, so they end at their EOS.
    """
    from conftest import EOS_PRONE_PROMPTS

    texts, params = [], []
    for i, text in enumerate(EOS_PRONE_PROMPTS[:n]):
        p = {"max_new_tokens": 2 + (i * 5) % 12}
        if i % 3 == 1:
            p["min_new_tokens"] = min(p["max_new_tokens"], 2 + i % 7)
        texts.append(text)
        params.append(p)
    if ends is not None:
        early = [i for i, end in enumerate(ends) if end is not None]
        assert len(early) >= 2, "the eos-prone model must end some texts early"
        for i in early[::2]:
            params[i]["min_new_tokens"] = min(params[i]["max_new_tokens"], ends[i] + 2)
        for i in early[1::2]:
            params[i].pop("min_new_tokens", None)
    return texts, params


def early_ends(engine, texts, params, eos: int | None) -> list[int | None]:
    """Tokens before EOS of each text given only its max_new_tokens, None when it runs to its max (``eos``: the id
    the engine returns at the end, None for CTranslate2, which leaves it out)."""
    ends = []
    for text, p in zip(texts, params, strict=True):
        row = engine.generate_ids([text], {"max_new_tokens": p["max_new_tokens"]})[0]
        made = len(row) - (eos is not None and row[-1:] == [eos])
        ended = row[-1:] == [eos] if eos is not None else made < p["max_new_tokens"]
        ends.append(made if ended else None)
    return ends


@pytest.fixture(scope="module")
def eos_prone_engine(eos_prone_model_dir):
    from llmdeploy.handlers.precision import CPU
    from llmdeploy.handlers.seq2seq import TransformersEngine
    from llmdeploy.handlers.serving_config import parse_properties

    config = parse_properties({"option.model_id": str(eos_prone_model_dir)})
    return TransformersEngine.load(str(eos_prone_model_dir), config, device=CPU)


@pytest.mark.parametrize("engine_name", ["tiny_engine", "eos_prone_engine"])
def test_rows_of_their_own_lengths_share_one_generate_and_get_what_they_would_alone(engine_name, request):
    """One generate call to the longest row; each row stopped at its own max_new_tokens and kept from EOS until
    its own min_new_tokens: token for token what generate gives the row alone (transformers' own length rules)."""
    engine = request.getfixturevalue(engine_name)
    eos = engine.tokenizer.eos_token_id
    texts, params = mixed_lengths()
    if engine_name == "eos_prone_engine":  # minimums that change what the rows get
        texts, params = mixed_lengths(early_ends(engine, texts, params, eos))
    calls = engine.generate_calls
    together = engine.generate_ids(texts, params)
    assert engine.generate_calls == calls + 1 and engine.batch_sizes[-1] == len(texts)
    alone = [engine.generate_ids([t], p)[0] for t, p in zip(texts, params, strict=True)]
    assert together == alone
    for row, p in zip(together, params, strict=True):
        made = len(row) - (row[-1:] == [eos])
        assert made <= p["max_new_tokens"] and (row[-1:] == [eos] or made == p["max_new_tokens"])
        assert eos not in row[:-1] and made >= p.get("min_new_tokens", 0)
    if engine_name == "eos_prone_engine":  # some rows still end early: EOS is the model's choice where it may be
        assert any(row[-1:] == [eos] for row, p in zip(together, params, strict=True) if not p.get("min_new_tokens"))


def test_sampled_rows_keep_their_own_lengths(tiny_engine):
    import torch

    torch.manual_seed(0)
    params = [{"do_sample": True, "top_k": 20, "max_new_tokens": n, "min_new_tokens": n} for n in (2, 7, 4)]
    rows = tiny_engine.generate_ids(["w1 w2", "w3", "w4 w5 w6"], params)
    assert [len(r) for r in rows] == [2, 7, 4]
