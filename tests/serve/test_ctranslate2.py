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
