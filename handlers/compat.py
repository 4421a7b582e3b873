"""Model folders written by one transformers major, loaded by another (stdlib only).

The LMI images ship transformers 4.x (LMI 0.33.0: 4.51.3, 0.35.0: 4.57.1) while a model may
have been saved with transformers 5. Three differences matter for a FLAN-T5 folder, each
checked against the real libraries (tests/serve/test_compat.py runs them under both majors):

- ``tokenizer_config.json``: transformers 5 writes ``extra_special_tokens`` as a *list* (T5's
  ``<extra_id_N>``; ``[]`` when there are none) where 4.x expects a dict of named tokens, and
  4.51/4.57 fail with ``'list' object has no attribute 'keys'``. It writes no
  ``additional_special_tokens`` (4.x's name for that list), ``tokenizer_class``
  ``TokenizersBackend`` for a generic fast tokenizer (4.x: ``PreTrainedTokenizerFast``), and keeps
  ``add_prefix_space`` while dropping ``spiece.model``, which makes 4.x's T5TokenizerFast try to
  rebuild itself from the missing sentencepiece file. ``tokenizer.json`` already encodes that
  pre-tokenizer, so the key is dropped.
- ``config.json`` of T5: transformers 5 always writes ``tie_word_embeddings: true`` and records the
  checkpoint's real choice in ``scale_decoder_outputs`` (False for T5 v1.1 / FLAN-T5). 4.x reads
  ``tie_word_embeddings`` as both "share lm_head with the embeddings" and "scale the decoder output
  by d_model**-0.5", so it would tie and scale an untied FLAN-T5: a different model. Restoring
  ``tie_word_embeddings = scale_decoder_outputs`` gives 4.x the checkpoint's semantics.
- ``from_pretrained(dtype=...)`` is transformers 5's keyword; 4.x takes ``torch_dtype``.

Every function here is pure: dict in, dict (or None for "nothing to change") out.
"""

from __future__ import annotations

import json
import os

TOKENIZER_CONFIG = "tokenizer_config.json"
MODEL_CONFIG = "config.json"
# Keys transformers 5 writes that 4.x passes on to the tokenizer's __init__ as unknown kwargs.
_V5_ONLY_TOKENIZER_KEYS = ("backend", "is_local", "local_files_only")
_SLOW_VOCAB_FILES = ("spiece.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json")


def major_version(version: str) -> int:
    """``"4.51.3"`` -> 4; ``"5.0.0.dev0"`` -> 5."""
    head = str(version).split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def dtype_keyword(transformers_version: str) -> str:
    """The ``from_pretrained`` keyword for the weights' dtype: ``dtype`` from 5, ``torch_dtype`` before."""
    return "dtype" if major_version(transformers_version) >= 5 else "torch_dtype"


def tokenizer_config_for_v4(config: dict, files: set[str] | frozenset[str] = frozenset()) -> dict | None:
    """``tokenizer_config.json`` as transformers 4.x can load it; None when it already can.

    ``files`` are the names in the tokenizer's folder (to know whether a slow vocabulary exists).
    """
    out = dict(config)
    extra = out.get("extra_special_tokens")
    if isinstance(extra, list):
        del out["extra_special_tokens"]
        additional = list(out.get("additional_special_tokens") or [])
        additional += [t for t in extra if t not in additional]
        if additional:
            out["additional_special_tokens"] = additional
    if out.get("tokenizer_class") == "TokenizersBackend":
        out["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in _V5_ONLY_TOKENIZER_KEYS:
        out.pop(key, None)
    has_slow_vocab = any(name in files for name in _SLOW_VOCAB_FILES)
    if "add_prefix_space" in out and "tokenizer.json" in files and not has_slow_vocab:
        del out["add_prefix_space"]
    return None if out == config else out


def model_config_for_v4(config: dict) -> dict | None:
    """``config.json`` with T5's ``tie_word_embeddings`` as transformers 4.x reads it; None when unchanged.

    Only a T5 config written by transformers 5 (it has ``scale_decoder_outputs``) whose two flags
    disagree changes. The result loads the same way under 5, whose T5Config derives
    ``scale_decoder_outputs`` from ``tie_word_embeddings``.
    """
    if config.get("model_type") != "t5" or "scale_decoder_outputs" not in config:
        return None
    wanted = bool(config["scale_decoder_outputs"])
    if config.get("tie_word_embeddings") == wanted:
        return None
    return {**config, "tie_word_embeddings": wanted}


def read_json(path: str) -> dict | None:
    """A JSON object file, or None when the file is absent."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def dumps(config: dict) -> str:
    """JSON as transformers writes it (2-space indent, sorted keys, trailing newline)."""
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
