"""Exact parameter counts for any architecture transformers knows: build the model on the meta device.

On the ``meta`` device a tensor has a shape and no storage, so building even a
400B-parameter model allocates nothing and takes a second or two; summing the
shapes gives the exact count of the module tree transformers would load the
checkpoint into. Two corrections make it the count of the *checkpoint*:

- Tied embeddings follow the checkpoint's own ``config.json``. transformers 5
  ties some heads on construction whatever the file says (``T5Config`` forces
  ``tie_word_embeddings=True``, and ``from_pretrained`` unties it again when the
  checkpoint holds a separate ``lm_head``, as FLAN-T5's does): a head the raw
  config declares untied is counted on its own, and a head it declares tied is
  counted once.
- Mixture-of-experts: the routed experts' parameters are found by name
  (``....experts....``, fused 3-D tensors in transformers 5 or one module per
  expert before it) and ``experts_inactive`` is the share a token does not use,
  ``(n - k) / n`` of them for ``k`` of ``n`` experts per token.

Remote code (``auto_map`` / ``trust_remote_code``) is never run: a ``model_type``
transformers does not ship cannot be counted here.

torch and transformers are imported only when a count is not cached. Counts
are cached per config and transformers version under the user cache
(``$LLMDEPLOY_CACHE_DIR`` or ``~/.cache/llmdeploy``), so the next ``plan`` for
the same model needs neither.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from llmdeploy.models import CountedParameters

# Bump when the counting below changes, so cached counts from older code are not reused.
COUNT_VERSION = 1
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_EXPERTS_PER_TOKEN = ("num_experts_per_tok", "num_experts_per_token", "moe_top_k", "top_k")
_POSITION_NAMES = ("embed_positions", "position_embeddings", "wpe", "pos_emb")


class CountUnavailable(Exception):
    """The meta-device count cannot be made; ``missing`` names a package to install, if that is why."""

    def __init__(self, reason: str, *, missing: str | None = None):
        super().__init__(reason)
        self.missing = missing


def transformers_version() -> str | None:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def count_parameters(raw: dict[str, Any], *, use_cache: bool = True) -> CountedParameters:
    """Exact parameters of the checkpoint ``raw`` (a config.json) describes, from the meta device."""
    version = transformers_version()
    if version is None:
        raise CountUnavailable(
            "no closed form for this architecture, and transformers (to count it on the meta device) is not installed",
            missing="transformers",
        )
    path = _cache_path(raw, version)
    if use_cache:
        cached = _read_cached(path)
        if cached is not None:
            return cached
    counted = _count_on_meta(raw, version)
    if use_cache:
        _write_cached(path, counted)
    return counted


def _cache_path(raw: dict[str, Any], version: str) -> Path:
    from llmdeploy.catalog import user_cache_dir

    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return user_cache_dir().parent / "parameter-counts" / f"v{COUNT_VERSION}-transformers-{version}-{digest}.json"


def _read_cached(path: Path) -> CountedParameters | None:
    try:
        return CountedParameters(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # absent or unreadable: count again


def _write_cached(path: Path, counted: CountedParameters) -> None:
    from llmdeploy.fileio import write_atomic

    with contextlib.suppress(OSError):  # a read-only cache only costs the next run a recount
        write_atomic(path, json.dumps(asdict(counted), indent=1) + "\n")


def _count_on_meta(raw: dict[str, Any], version: str) -> CountedParameters:
    try:
        import torch
        import transformers
        from transformers import CONFIG_MAPPING
    except ModuleNotFoundError as exc:
        raise CountUnavailable(f"no closed form for this architecture, and counting it on the meta device needs {exc.name}, "
                               "which is not installed", missing=exc.name) from None
    model_type = raw.get("model_type")  # a non-empty name: llmdeploy.models.from_dict refused anything else
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise CountUnavailable(f"transformers {version} has no model_type {model_type!r} (remote code is never run)")
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # construction warnings are not the user's business here
    try:
        config = CONFIG_MAPPING[model_type].from_dict(json.loads(json.dumps(raw)))
        model_class = _model_class(transformers, config, raw)
        with torch.device("meta"):
            model = model_class(config)
    except CountUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any construction failure becomes one line naming it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CountUnavailable(f"transformers {version} could not build it on the meta device ({type(exc).__name__}: {first})") from None
    finally:
        transformers.logging.set_verbosity(previous)
    return _count(model, config, raw, f"meta device, transformers {version}")


def _model_class(transformers, config, raw: dict[str, Any]):
    """The class the checkpoint was saved from (``architectures``), else the usual auto class for the config."""
    for name in raw.get("architectures") or ():
        cls = getattr(transformers, str(name), None) if str(name).isidentifier() else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    for auto in ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForImageTextToText", "AutoModel"):
        mapping = getattr(transformers, auto)._model_mapping
        try:
            return mapping[type(config)]
        except KeyError:
            continue
    raise CountUnavailable(f"transformers has no model class for model_type {raw.get('model_type')!r}")


def _declared(raw: dict[str, Any], key: str) -> Any:
    text = raw.get("text_config")
    if key in raw:
        return raw[key]
    return text.get(key) if isinstance(text, dict) else None


def _count(model, config, raw: dict[str, Any], method: str) -> CountedParameters:
    inputs = model.get_input_embeddings()
    outputs = model.get_output_embeddings()
    in_weight = getattr(inputs, "weight", None)
    out_ids = {id(p) for p in outputs.parameters()} if outputs is not None else set()
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    embedding = encoder = decoder = lm_head = other = experts = 0
    for name, p in model.named_parameters():  # shared tensors appear once
        n = p.numel()
        if in_weight is not None and p is in_weight:
            embedding += n
        elif id(p) in out_ids:
            lm_head += n
        elif any(part in name for part in _POSITION_NAMES):
            other += n
        elif encoder_decoder and (name.startswith("encoder.") or ".encoder." in name):
            encoder += n
        else:
            decoder += n
        if ".experts." in f".{name}." and "shared_expert" not in name:
            experts += n
    out_weight = getattr(outputs, "weight", None) if outputs is not None else None
    if out_weight is not None and in_weight is not None:
        declared = _declared(raw, "tie_word_embeddings")
        if out_weight is in_weight and declared is False:
            lm_head += out_weight.numel()  # the checkpoint stores its own head (FLAN-T5, and T5 v1.1 generally)
        elif out_weight is not in_weight and declared is True and out_weight.shape == in_weight.shape:
            lm_head -= out_weight.numel()  # the checkpoint stores one matrix for both
    n_experts = next((int(v) for k in _EXPERTS if isinstance(v := _declared(raw, k), int)), 0)
    per_token = next((int(v) for k in _EXPERTS_PER_TOKEN if isinstance(v := _declared(raw, k), int)), 0)
    inactive = experts * (n_experts - per_token) // n_experts if n_experts > 1 and 0 < per_token < n_experts else 0
    return CountedParameters(embedding, encoder, decoder, lm_head, other, inactive, method)
