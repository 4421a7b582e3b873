"""Model configs: the bundled ones by name, or any local config.json / model directory.

Sizing reads configs, never weights. A ``ModelConfig`` normalises the few fields
sizing needs across architecture families; each family's field names are read
in ``_FAMILY_READERS``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from llmdeploy.checks import MAX_CONFIG_INT, shown
from llmdeploy.errors import ConfigError, UnknownChoiceError

MODELS_DIR = Path(__file__).parent / "data" / "models"

_TORCH_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    model_type: str  # t5 | llama | mistral | qwen2 | gpt2
    encoder_decoder: bool
    vocab_size: int
    d_model: int
    n_layers: int  # decoder layers (all layers for decoder-only)
    n_encoder_layers: int  # 0 for decoder-only
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    gated_mlp: bool
    tied_embeddings: bool
    attention_bias: bool
    max_positions: int
    native_dtype: str  # fp32 | fp16 | bf16
    relative_attention_buckets: int = 0
    hf_id: str | None = None
    origin: str = ""  # "bundled" or the file path it came from

    @property
    def attention_inner(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_inner(self) -> int:
        return self.n_kv_heads * self.head_dim


@cache
def bundled_index() -> dict[str, dict[str, Any]]:
    with (MODELS_DIR / "index.toml").open("rb") as fh:
        return tomllib.load(fh)["models"]


def bundled_names() -> list[str]:
    return list(bundled_index())


def load_model_config(name_or_path: str) -> ModelConfig:
    """A bundled model by name (case-insensitive; the Hugging Face id works too) or a local path."""
    index = bundled_index()
    key = name_or_path.strip()
    by_hf = {row["hf_id"].lower(): name for name, row in index.items()}
    lowered = key.lower()
    if lowered in index or lowered in by_hf:
        name = lowered if lowered in index else by_hf[lowered]
        raw = _read_json(MODELS_DIR / f"{name}.json")
        return from_dict(raw, name=name, hf_id=index[name]["hf_id"], origin="bundled")
    path = Path(key).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"model directory {key!r} has no config.json.", hint="Point at a Hugging Face model folder or its config.json.")
    if path.is_file():
        return from_dict(_read_json(path), name=path.parent.name if path.name == "config.json" else path.stem, origin=str(path))
    if path.exists():  # a FIFO, a device, a socket: reading could block or never end
        raise ConfigError(f"model config {key!r} is not a regular file.", hint="Point at a config.json or a model folder.")
    raise UnknownChoiceError(
        "model", key, index, fix="Use a bundled name (llmdeploy estimate --list-models) or a path to a config.json or model folder."
    )


def _read_json(path: Path) -> dict[str, Any]:
    from llmdeploy.fileio import read_text_utf8

    text = read_text_utf8(path, "model config")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model config {path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    except ValueError as exc:  # an integer of more than 4300 digits (Python's int-parsing limit)
        raise ConfigError(f"model config {path} has a number too long to read: {str(exc).split(';')[0]}.") from None
    except RecursionError:
        raise ConfigError(f"model config {path} is nested too deeply to read.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path} must be a JSON object, got {type(data).__name__}.")
    return data


def from_dict(raw: dict[str, Any], *, name: str, hf_id: str | None = None, origin: str = "") -> ModelConfig:
    model_type = raw.get("model_type")
    reader = _FAMILY_READERS.get(model_type) if isinstance(model_type, str) else None
    if reader is None:
        raise ConfigError(
            f"model config {origin or name} has model_type {shown(model_type)}, which llmdeploy cannot size; "
            f"supported: {', '.join(sorted(_FAMILY_READERS))}."
        )
    try:
        fields = reader(raw)
    except KeyError as exc:
        raise ConfigError(f"model config {origin or name} ({model_type}) lacks the field {exc.args[0]!r}.") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model config {origin or name} ({model_type}) has a malformed field: {exc}.") from None
    dtype = raw.get("torch_dtype") or raw.get("dtype") or "float32"
    config = ModelConfig(
        name=name, model_type=model_type, hf_id=hf_id, origin=origin, native_dtype=_TORCH_DTYPES.get(str(dtype), "fp32"), **fields
    )
    # Derived sizes too (head_dim = hidden / heads, GPT-2's n_inner), each 1..MAX_CONFIG_INT.
    for field_name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "max_positions"):
        value = getattr(config, field_name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_CONFIG_INT:
            raise ConfigError(f"model config {origin or name}: {field_name} must be a whole number 1..{MAX_CONFIG_INT}, "
                              f"got {shown(value)}.")
    if config.n_kv_heads > config.n_heads:
        raise ConfigError(f"model config {origin or name}: {config.n_kv_heads} key/value heads is more than its "
                          f"{config.n_heads} attention heads.")
    return config


def _int(raw: dict[str, Any], key: str, default: Any = None, *, minimum: int = 1) -> int:
    """The integer ``raw[key]``: whole, ``minimum``..MAX_CONFIG_INT (0 layers, heads or widths would divide by zero,
    negative ones give negative sizes and times, and a 5000-digit one overflows every float)."""
    value = raw.get(key, default)
    if value is None:
        raise KeyError(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {shown(value)}")
    if not minimum <= value <= MAX_CONFIG_INT:
        raise ValueError(f"{key} must be {minimum}..{MAX_CONFIG_INT}, got {shown(value)}")
    return value


def _t5(raw: dict[str, Any]) -> dict[str, Any]:
    layers = _int(raw, "num_layers")
    return dict(
        encoder_decoder=True,
        vocab_size=_int(raw, "vocab_size"),
        d_model=_int(raw, "d_model"),
        n_layers=_int(raw, "num_decoder_layers", layers),
        n_encoder_layers=layers,
        n_heads=_int(raw, "num_heads"),
        n_kv_heads=_int(raw, "num_heads"),
        head_dim=_int(raw, "d_kv"),
        d_ff=_int(raw, "d_ff"),
        gated_mlp=str(raw.get("feed_forward_proj", "relu")).startswith("gated-"),
        # Original T5 ties the LM head to the embeddings; T5 v1.1 / FLAN-T5 configs say false.
        tied_embeddings=bool(raw.get("tie_word_embeddings", True)),
        attention_bias=False,
        max_positions=_int(raw, "n_positions", 512),
        relative_attention_buckets=_int(raw, "relative_attention_num_buckets", 32, minimum=0),
    )


def _llama_like(raw: dict[str, Any]) -> dict[str, Any]:
    d_model = _int(raw, "hidden_size")
    heads = _int(raw, "num_attention_heads")
    return dict(
        encoder_decoder=False,
        vocab_size=_int(raw, "vocab_size"),
        d_model=d_model,
        n_layers=_int(raw, "num_hidden_layers"),
        n_encoder_layers=0,
        n_heads=heads,
        n_kv_heads=_int(raw, "num_key_value_heads", heads),
        head_dim=_int(raw, "head_dim", d_model // heads) if raw.get("head_dim") is not None else d_model // heads,
        d_ff=_int(raw, "intermediate_size"),
        gated_mlp=True,
        tied_embeddings=bool(raw.get("tie_word_embeddings", False)),
        # Qwen2 always has q/k/v biases; Llama and Mistral only when attention_bias says so.
        attention_bias=bool(raw.get("attention_bias", raw.get("model_type") == "qwen2")),
        max_positions=_int(raw, "max_position_embeddings", 2048),
    )


def _gpt2(raw: dict[str, Any]) -> dict[str, Any]:
    d_model = _int(raw, "n_embd")
    heads = _int(raw, "n_head")
    return dict(
        encoder_decoder=False,
        vocab_size=_int(raw, "vocab_size"),
        d_model=d_model,
        n_layers=_int(raw, "n_layer"),
        n_encoder_layers=0,
        n_heads=heads,
        n_kv_heads=heads,
        head_dim=d_model // heads,
        d_ff=raw.get("n_inner") or 4 * d_model,
        gated_mlp=False,
        tied_embeddings=bool(raw.get("tie_word_embeddings", True)),
        attention_bias=True,
        max_positions=_int(raw, "n_positions", 1024),
    )


_FAMILY_READERS = {"t5": _t5, "llama": _llama_like, "mistral": _llama_like, "qwen2": _llama_like, "gpt2": _gpt2}
