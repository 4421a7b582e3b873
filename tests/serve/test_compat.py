"""Model folders written by transformers 5 served by the transformers 4.x of the LMI images, and back.

Runs under whatever transformers is installed: the newest 5.x in the dev environment and
LMI 0.33.0's 4.51.3 in .ci/run's second environment (llmdeploy/data/lmi.toml [tested]).
``data/t5-tokenizer-saved-by-transformers-5`` is what transformers 5.24.0's T5Tokenizer
(tokenizers backend, 5 extra ids) wrote with save_pretrained; under 5.x the test below
checks that the installed 5.x still writes the same shape.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmdeploy.containers.package import PackageSettings, adapted_weight_files, build_model_tarball
from llmdeploy.handlers.compat import dtype_keyword, major_version, model_config_for_v4, tokenizer_config_for_v4

T5_TOKENIZER_V5 = Path(__file__).parent / "data" / "t5-tokenizer-saved-by-transformers-5"
PROBE = "w1 w2 <extra_id_3> w39 w7"


def transformers_major() -> int:
    import transformers

    return major_version(transformers.__version__)


# -- the pure rules -------------------------------------------------------------------------------

def test_extra_special_tokens_list_becomes_additional_special_tokens():
    written = json.loads((T5_TOKENIZER_V5 / "tokenizer_config.json").read_text())
    fixed = tokenizer_config_for_v4(written, {"tokenizer.json", "tokenizer_config.json"})
    assert "extra_special_tokens" not in fixed and fixed["additional_special_tokens"] == written["extra_special_tokens"]
    assert not {"backend", "is_local", "local_files_only"} & set(fixed)
    assert tokenizer_config_for_v4(fixed, {"tokenizer.json"}) is None, "adapting twice changes nothing"
    assert "extra_special_tokens" not in tokenizer_config_for_v4({"extra_special_tokens": []}, set())


def test_add_prefix_space_dropped_only_without_a_slow_vocabulary():
    config = {"add_prefix_space": True, "tokenizer_class": "T5Tokenizer"}
    assert "add_prefix_space" not in tokenizer_config_for_v4(config, {"tokenizer.json"})
    assert tokenizer_config_for_v4(config, {"tokenizer.json", "spiece.model"}) is None


def test_generic_fast_tokenizer_class_and_4x_configs_untouched():
    assert tokenizer_config_for_v4({"tokenizer_class": "TokenizersBackend"}, set())["tokenizer_class"] == \
        "PreTrainedTokenizerFast"
    four_x = {"tokenizer_class": "T5Tokenizer", "extra_special_tokens": {}, "additional_special_tokens": ["<x>"]}
    assert tokenizer_config_for_v4(four_x, {"tokenizer.json", "spiece.model"}) is None


def test_t5_head_flags():
    tied_v5 = {"model_type": "t5", "tie_word_embeddings": True, "scale_decoder_outputs": False}
    assert model_config_for_v4(tied_v5)["tie_word_embeddings"] is False
    assert model_config_for_v4({"model_type": "t5", "tie_word_embeddings": False, "scale_decoder_outputs": False}) is None
    assert model_config_for_v4({"model_type": "t5", "tie_word_embeddings": False}) is None  # written by 4.x
    assert model_config_for_v4({"model_type": "bart", "tie_word_embeddings": True, "scale_decoder_outputs": 0}) is None
    assert [dtype_keyword(v) for v in ("4.51.3", "4.57.1", "5.0.0", "5.24.0")] == \
        ["torch_dtype", "torch_dtype", "dtype", "dtype"]


# -- the real libraries ------------------------------------------------------------------------------

def _raw_ids(folder: Path, text: str) -> list[int]:
    """What tokenizer.json itself computes (the tokenizers library, no transformers)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids


def test_the_recorded_folder_is_what_transformers_5_writes(tmp_path):
    """Under 5.x: the installed transformers still writes this shape. Under 4.x: the files hold a T5 tokenizer."""
    recorded = json.loads((T5_TOKENIZER_V5 / "tokenizer_config.json").read_text())
    added = json.loads((T5_TOKENIZER_V5 / "tokenizer.json").read_text())["added_tokens"]
    assert {t["content"] for t in added if t["special"]} >= set(recorded["extra_special_tokens"]) | {"</s>", "<pad>"}
    if transformers_major() < 5:
        return
    from transformers import T5Tokenizer

    vocab = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581w{i}", -i / 10) for i in range(40)]
             + [("\u2581", -5.0)] + [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"])
    T5Tokenizer(vocab=vocab, extra_ids=5).save_pretrained(tmp_path)
    fresh = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert isinstance(fresh["extra_special_tokens"], list) and fresh["extra_special_tokens"] == recorded["extra_special_tokens"]
    assert fresh["tokenizer_class"] == recorded["tokenizer_class"] and "additional_special_tokens" not in fresh
    assert _raw_ids(tmp_path, PROBE) == _raw_ids(T5_TOKENIZER_V5, PROBE)


def test_transformers_4x_cannot_load_the_folder_as_written(tmp_path):
    """The failure the issue reports, reproduced (under 5.x the folder loads as written)."""
    from transformers import AutoTokenizer

    if transformers_major() >= 5:
        assert AutoTokenizer.from_pretrained(T5_TOKENIZER_V5)(PROBE).input_ids == _raw_ids(T5_TOKENIZER_V5, PROBE)
        return
    # 4.51.3 with protobuf (as in the LMI image): "'list' object has no attribute 'keys'"; without protobuf it
    # fails earlier, asking for it while trying to rebuild the tokenizer from a sentencepiece file.
    with pytest.raises(Exception, match="has no attribute 'keys'|protobuf|model_file or model_proto"):
        AutoTokenizer.from_pretrained(T5_TOKENIZER_V5)


def test_packaged_tokenizer_loads_with_the_same_ids_and_special_tokens(tmp_path):
    from llmdeploy.handlers.seq2seq import load_tokenizer

    folder = tmp_path / "model"
    shutil.copytree(T5_TOKENIZER_V5, folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    adapted = adapted_weight_files(folder)
    assert list(adapted) == ["weights/tokenizer_config.json"]
    (folder / "tokenizer_config.json").write_bytes(adapted["weights/tokenizer_config.json"])  # what the tarball holds
    for source in (folder, T5_TOKENIZER_V5):  # shipped folder, and a weightsUri folder adapted at load time
        tokenizer = load_tokenizer(str(source))
        ids = tokenizer(PROBE).input_ids
        assert ids == _raw_ids(T5_TOKENIZER_V5, PROBE)
        assert "<extra_id_3>" in tokenizer.all_special_tokens
        assert tokenizer.decode(ids, skip_special_tokens=True).split() == ["w1", "w2", "w39", "w7"]
    assert sorted(p.name for p in T5_TOKENIZER_V5.iterdir()) == ["tokenizer.json", "tokenizer_config.json"], \
        "loading must not write into the model folder"


def _tied_unscaled_t5(tmp_path: Path):
    """A T5 whose head IS its embeddings, without output scaling, as transformers 5 saves one it tied.

    Returns (folder, reference logits computed in process, inputs). Under 5.x the folder is what
    save_pretrained writes (config tie_word_embeddings true + scale_decoder_outputs false, no
    lm_head.weight). Under 4.x it is made to look the same; the reference is a 4.x model with an
    untied head holding a copy of the embeddings.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=64, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)
    torch.manual_seed(3)
    model = T5ForConditionalGeneration(config).eval()
    folder = tmp_path / "tied"
    if transformers_major() >= 5:
        assert model.lm_head.weight is model.shared.weight  # transformers 5 tied it on construction
        model.save_pretrained(folder)
    else:
        with torch.no_grad():
            model.lm_head.weight.copy_(model.shared.weight)
        model.save_pretrained(folder)
        written = json.loads((folder / "config.json").read_text())
        written.update(tie_word_embeddings=True, scale_decoder_outputs=False)
        (folder / "config.json").write_text(json.dumps(written))
        weights = load_file(folder / "model.safetensors")
        del weights["lm_head.weight"]
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    saved = json.loads((folder / "config.json").read_text())
    assert (saved["tie_word_embeddings"], saved["scale_decoder_outputs"]) == (True, False)
    inputs = dict(input_ids=torch.tensor([[5, 6, 7, 1]]), decoder_input_ids=torch.tensor([[0, 3, 9]]))
    with torch.no_grad():
        reference = model(**inputs).logits
    return folder, reference, inputs


def test_a_tied_checkpoint_from_transformers_5_computes_the_same_under_this_transformers(tmp_path):
    import torch

    from llmdeploy.handlers.seq2seq import load_seq2seq_model

    folder, reference, inputs = _tied_unscaled_t5(tmp_path)
    for name, data in adapted_weight_files(folder).items():  # what `llmdeploy package` ships
        (folder / Path(name).name).write_bytes(data)
    loaded = load_seq2seq_model(str(folder), torch.float32).eval()
    with torch.no_grad():
        logits = loaded(**inputs).logits
    assert torch.allclose(logits, reference, atol=1e-5), (logits - reference).abs().max()
    if transformers_major() >= 5:  # and it is what transformers 5 itself makes of the folder
        from transformers import AutoModelForSeq2SeqLM

        native = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
        with torch.no_grad():
            assert torch.allclose(native(**inputs).logits, logits, atol=1e-5)


def test_weights_load_at_the_requested_dtype(tiny_model_dir):
    """transformers 4.x rejects from_pretrained(dtype=...) ('unexpected keyword argument'): the keyword follows the version."""
    import torch

    from llmdeploy.handlers.seq2seq import load_seq2seq_model

    model = load_seq2seq_model(str(tiny_model_dir), torch.float16)
    assert model.shared.weight.dtype == torch.float16


def test_package_of_a_transformers_5_folder_serves_under_this_transformers(tiny_model_dir, tmp_path):
    """The tiny FLAN-T5 fixture as this transformers wrote it, packaged, loaded by the handler's engine."""
    import tarfile

    from llmdeploy.handlers.precision import CPU
    from llmdeploy.handlers.seq2seq import TransformersEngine
    from llmdeploy.handlers.serving_config import parse_properties

    result = build_model_tarball(tmp_path / "m.tar.gz", PackageSettings(), weights_dir=tiny_model_dir)
    if transformers_major() >= 5:  # its generic fast tokenizer is saved as TokenizersBackend
        assert "weights/tokenizer_config.json" in result.adapted
    with tarfile.open(result.path) as tar:
        tar.extractall(tmp_path / "x", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    config = parse_properties({"model_id": "/opt/ml/model/weights", "model_dir": str(tmp_path / "x")})
    engine = TransformersEngine.load(config.model_location(), config, device=CPU)
    original = TransformersEngine.load(str(tiny_model_dir), config, device=CPU)
    params = {"max_new_tokens": 4, "min_new_tokens": 4}
    assert engine.generate_ids(["w1 w2 w3", "w4"], params) == original.generate_ids(["w1 w2 w3", "w4"], params)
    assert engine.encode(["w1 w2 w3"]) == original.encode(["w1 w2 w3"])
