"""CTranslate2 backend: offline conversion of the same T5 folder, same scores, same batching."""

from __future__ import annotations

import pytest

ctranslate2 = pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module")
def ct2_engine(tiny_model_dir, tiny_ct2_dir, tiny_config):
    from llmdeploy.handlers.precision import CPU
    from llmdeploy.handlers.seq2seq import CTranslate2Engine

    return CTranslate2Engine.load(str(tiny_model_dir), tiny_config, ct2_dir=tiny_ct2_dir, device=CPU)


def test_converted_model_scores_match_transformers(tiny_model_dir, tiny_ct2_dir, tiny_engine):
    """Log-probabilities agree, so beam search and sampling behave alike (T5 output scaling kept)."""
    import torch

    tok = tiny_engine.tokenizer
    src = tok("w1 w2 w3")["input_ids"]
    tgt = [5, 9, 17, 1]
    translator = ctranslate2.Translator(str(tiny_ct2_dir))
    ct2 = translator.score_batch([tok.convert_ids_to_tokens(src)], [tok.convert_ids_to_tokens(tgt)])[0].log_probs
    with torch.no_grad():
        logits = tiny_engine.model(input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([[0] + tgt[:-1]])).logits
    ref = torch.log_softmax(logits[0].float(), -1)
    assert ct2[: len(tgt)] == pytest.approx([ref[i, t].item() for i, t in enumerate(tgt)], abs=1e-3)


def test_greedy_ids_match_transformers(ct2_engine, tiny_engine):
    texts = ["w1 w2 w3", "w4", "w10 w20 w30 w40 w50"]
    params = {"max_new_tokens": 6, "min_new_tokens": 6}
    assert ct2_engine.generate_ids(texts, params) == tiny_engine.generate_ids(texts, params)


def test_ct2_engine_one_call_per_batch_and_truncation(ct2_engine):
    calls = ct2_engine.generate_calls
    long_text = " ".join(f"w{i % 200}" for i in range(600))
    out = ct2_engine.generate_ids(["w1", long_text], {"max_new_tokens": 3, "min_new_tokens": 3})
    assert [len(r) for r in out] == [3, 3] and ct2_engine.generate_calls == calls + 1


def test_ctranslate2_backend_behind_the_service(tiny_model_dir, tiny_ct2_dir, tmp_path):
    from conftest import djl_for, serving_properties
    from djl_double import HttpRequest

    from llmdeploy.handlers.lmi_service import Seq2SeqService
    from llmdeploy.handlers.seq2seq import load_engine

    service = Seq2SeqService(engine_loader=lambda cfg: load_engine(cfg, ct2_dir=tiny_ct2_dir))
    djl = djl_for(service)
    assert djl.initialize(serving_properties(model_id=str(tiny_model_dir), backend="ctranslate2")).code == 204
    assert service.engine.name == "ctranslate2"
    good, bad = djl.predict([HttpRequest.json({"inputs": "w1"}), HttpRequest.json({"inputs": "w2", "parameters": {"bad": 1}})])
    assert good.status == bad.status == 200
    assert "generated_text" in good.json() and bad.json()["code"] == 400


def test_compute_types_per_device():
    from llmdeploy.handlers.precision import A10G, CPU, T4
    from llmdeploy.handlers.seq2seq import ct2_compute_type

    assert [ct2_compute_type(d, CPU) for d in ("auto", "int8", "fp32", "fp16")] == ["int8", "int8", "float32", "int8"]
    assert [ct2_compute_type(d, T4) for d in ("auto", "int8", "fp16")] == ["float16", "int8_float16", "float16"]
    assert ct2_compute_type("auto", A10G) == "bfloat16"


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_same_greedy_tokens_as_transformers_at_each_cpu_compute_type(tiny_model_dir, tiny_ct2_dir, tiny_config,
                                                                      tiny_engine, compute_type):
    from llmdeploy.handlers.precision import CPU
    from llmdeploy.handlers.seq2seq import CTranslate2Engine

    engine = CTranslate2Engine.load(str(tiny_model_dir), tiny_config, ct2_dir=tiny_ct2_dir, device=CPU,
                                    compute_type=compute_type)
    texts = ["w1 w2 w3", "w4", "w10 w20 w30 w40 w50", "w100 w7 w9"]
    params = {"max_new_tokens": 8}
    assert engine.generate_ids(texts, params) == tiny_engine.generate_ids(texts, params)


def test_a_cancelled_row_stops_at_the_next_step(ct2_engine):
    full = ct2_engine.generate_ids(["w1 w2", "w3"], {"max_new_tokens": 12, "min_new_tokens": 12})
    cut = ct2_engine.generate_ids(["w1 w2", "w3"], {"max_new_tokens": 12, "min_new_tokens": 12},
                                  stop=lambda row: row == 1)
    assert cut[0] == full[0] and len(cut[1]) < len(full[1])


class _Recording:
    """The Translator, with the lengths each translate_batch call was given (the C++ object takes no attributes)."""

    def __init__(self, translator):
        self.translator = translator
        self.calls: list[tuple[int, int, int]] = []  # (rows, min_decoding_length, max_decoding_length)

    def translate_batch(self, source, **kwargs):
        self.calls.append((len(source), kwargs["min_decoding_length"], kwargs["max_decoding_length"]))
        return self.translator.translate_batch(source, **kwargs)


@pytest.fixture(scope="module")
def eos_prone_ct2(eos_prone_model_dir, tmp_path_factory):
    from llmdeploy.handlers.precision import CPU
    from llmdeploy.handlers.seq2seq import CTranslate2Engine, convert_to_ctranslate2
    from llmdeploy.handlers.serving_config import parse_properties

    converted = convert_to_ctranslate2(str(eos_prone_model_dir), tmp_path_factory.mktemp("eos-ct2") / "model")
    config = parse_properties({"option.model_id": str(eos_prone_model_dir)})
    return CTranslate2Engine.load(str(eos_prone_model_dir), config, ct2_dir=converted, device=CPU,
                                  compute_type="float32")


@pytest.mark.parametrize("engine_name", ["ct2_engine", "eos_prone_ct2"])
def test_rows_of_their_own_lengths_share_one_translate_batch(engine_name, request):
    """One translate_batch to the longest row, each row ended at its own length by the callback; a row that ended
    (EOS) before its own min_new_tokens is decoded again with it. Token for token what the row gets alone."""
    from test_handler import early_ends, mixed_lengths

    engine = request.getfixturevalue(engine_name)
    texts, params = mixed_lengths()
    if engine_name == "eos_prone_ct2":  # minimums that change what the rows get
        texts, params = mixed_lengths(early_ends(engine, texts, params, None))
    engine.translator = recording = _Recording(engine.translator)
    try:
        together = engine.generate_ids(texts, params)
        calls = list(recording.calls)
        alone = [engine.generate_ids([t], p)[0] for t, p in zip(texts, params, strict=True)]
    finally:
        engine.translator = recording.translator
    assert together == alone
    first = calls[0]
    assert first == (len(texts), 0, max(p["max_new_tokens"] for p in params)), "the whole batch, once, to the longest"
    for row, p in zip(together, params, strict=True):
        assert p.get("min_new_tokens", 0) <= len(row) <= p["max_new_tokens"]
    if engine_name == "eos_prone_ct2":
        assert len(calls) > 1 and all(n < len(texts) for n, _, _ in calls[1:]), \
            "rows that ended before their own min_new_tokens are decoded again, and only those"


def test_same_rows_as_transformers_with_their_own_lengths(eos_prone_ct2, eos_prone_model_dir):
    """The eos-prone model in float32 on both engines: ids agree row for row (CTranslate2 leaves EOS out)."""
    from test_handler import early_ends, mixed_lengths

    from llmdeploy.handlers.precision import CPU
    from llmdeploy.handlers.seq2seq import TransformersEngine
    from llmdeploy.handlers.serving_config import parse_properties

    hf = TransformersEngine.load(str(eos_prone_model_dir), parse_properties({"option.model_id": str(eos_prone_model_dir)}),
                                 device=CPU)
    eos = hf.tokenizer.eos_token_id
    texts, params = mixed_lengths()
    texts, params = mixed_lengths(early_ends(hf, texts, params, eos))
    expected = [row[:-1] if row[-1:] == [eos] else row for row in hf.generate_ids(texts, params)]
    assert eos_prone_ct2.generate_ids(texts, params) == expected


def test_sampled_rows_keep_their_own_max_new_tokens(ct2_engine):
    params = [{"do_sample": True, "top_k": 20, "max_new_tokens": n, "min_new_tokens": 2} for n in (2, 7, 4)]
    assert ct2_engine.batch_key(params[0]) == ct2_engine.batch_key(params[1])
    assert ct2_engine.batch_key({**params[0], "min_new_tokens": 3}) != ct2_engine.batch_key(params[0]), \
        "sampled rows share their min_new_tokens (one min_decoding_length per call)"
    rows = ct2_engine.generate_ids(["w1 w2", "w3", "w4 w5 w6"], params)
    assert [len(r) <= n for r, n in zip(rows, (2, 7, 4), strict=True)] == [True] * 3 and all(len(r) >= 2 for r in rows)


def test_mixed_lengths_behind_the_service_are_one_call(tiny_model_dir, tiny_ct2_dir):
    """DJL's static batch of requests with their own lengths: one generate call; each answer as if alone."""
    from conftest import djl_for, serving_properties
    from djl_double import HttpRequest

    from llmdeploy.handlers.lmi_service import Seq2SeqService
    from llmdeploy.handlers.seq2seq import load_engine

    service = Seq2SeqService(engine_loader=lambda cfg: load_engine(cfg, ct2_dir=tiny_ct2_dir))
    djl = djl_for(service)
    assert djl.initialize(serving_properties(model_id=str(tiny_model_dir), backend="ctranslate2")).code == 204
    bodies = [{"inputs": f"w{i} w{2 * i}", "parameters": {"max_new_tokens": 3 + 2 * i, "min_new_tokens": 1 + i}}
              for i in range(6)]
    alone = [service.engine.generate([b["inputs"]], b["parameters"])[0] for b in bodies]
    calls = service.engine.generate_calls
    answers = djl.predict([HttpRequest.json(b) for b in bodies])
    assert service.engine.generate_calls == calls + 1
    assert [a.json()["generated_text"] for a in answers] == alone
