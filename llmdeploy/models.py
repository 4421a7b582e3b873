"""Model configs: the bundled ones by name, any local config.json / model folder, or a Hugging Face Hub id.

Sizing reads configs, never weights. A ``ModelConfig`` normalises the few fields
sizing needs across architecture families. Five families have closed-form
parameter counts (``CLOSED_FORM_FAMILIES``, in ``llmdeploy.sizing``) and their
field names are read in ``_FAMILY_READERS``: they need nothing beyond the plain
install. Any other ``model_type`` is read by ``_generic`` (the field names
transformers' configs use, with their aliases) and its parameters are counted
exactly by building the model on the meta device (``llmdeploy.metacount``,
needs transformers), or taken from the Hub's checkpoint metadata when that is
all there is. A Hub id is resolved by ``llmdeploy.hub`` (needs huggingface_hub).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from llmdeploy.checks import MAX_CONFIG_INT, shown
from llmdeploy.errors import ConfigError, UnknownChoiceError, UsageError

MODELS_DIR = Path(__file__).parent / "data" / "models"

_TORCH_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
# Families whose parameters llmdeploy.sizing counts in closed form (no transformers needed).
CLOSED_FORM_FAMILIES = ("t5", "llama", "mistral", "qwen2", "gpt2")


@dataclass(frozen=True)
class CountedParameters:
    """Parameters counted outside the closed forms: on the meta device, or as the Hub states them."""

    embedding: int
    encoder: int
    decoder: int
    lm_head: int  # 0 when tied to the embedding
    other: int  # learned positions etc.
    experts_inactive: int  # MoE: routed-expert parameters one token does not use (0 for dense models)
    method: str  # how they were counted, in words
    from_hub: bool = False  # the Hub's (or a recorded published) count, not one of llmdeploy's own

    @property
    def total(self) -> int:
        return self.embedding + self.encoder + self.decoder + self.lm_head + self.other


@dataclass(frozen=True)
class HubRecord:
    """What the Hugging Face Hub says about the checkpoint a config describes."""

    repo_id: str
    revision: str | None = None  # as asked for (None: the default branch)
    commit: str | None = None  # the commit whose config.json was read
    parameters_by_dtype: tuple[tuple[str, int], ...] = ()  # model info's safetensors.parameters
    parameters_total: int | None = None  # the Hub's count (safetensors.total, or a bundled record of it)
    weights_bytes: int | None = None  # model.safetensors.index.json metadata.total_size
    gated: str | None = None  # "auto" / "manual" when the repo is gated
    source: str = ""  # where these figures came from, in words
    notice: str | None = None  # one line for the user (offline, Hub unreachable, cached copy used)
    recorded: bool = False  # a bundled model's published count, recorded in index.toml (not fetched)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    model_type: str  # any transformers model_type; closed-form counts for CLOSED_FORM_FAMILIES
    encoder_decoder: bool
    vocab_size: int
    d_model: int
    n_layers: int  # decoder layers (all layers for decoder-only)
    n_encoder_layers: int  # 0 for decoder-only
    n_heads: int
    n_kv_heads: int  # key/value heads: fewer than n_heads with GQA, 1 with multi-query attention
    head_dim: int
    d_ff: int  # MLP width (per expert for MoE)
    gated_mlp: bool
    tied_embeddings: bool
    attention_bias: bool
    max_positions: int
    native_dtype: str  # fp32 | fp16 | bf16
    relative_attention_buckets: int = 0
    hf_id: str | None = None
    origin: str = ""  # "bundled", the file path it came from, or the Hub id@commit
    n_experts: int = 0  # MoE: routed experts per layer (0 for dense models)
    n_experts_per_token: int = 0  # MoE: experts each token is routed to
    counted: CountedParameters | None = None  # parameters when no closed form applies
    hub: HubRecord | None = None  # the Hub's figures, when known

    @property
    def attention_inner(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_inner(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def revision(self) -> str:
        """The Hub commit this config was read from ("" when not from the Hub)."""
        return (self.hub.commit or "") if self.hub else ""


@cache
def bundled_index() -> dict[str, dict[str, Any]]:
    with (MODELS_DIR / "index.toml").open("rb") as fh:
        return tomllib.load(fh)["models"]


def load_model_config(name_or_path: str, *, revision: str | None = None) -> ModelConfig:
    """A bundled model by name (case-insensitive; its Hugging Face id works too), a local path, or a Hub id.

    A bundled model's Hub id is read from the bundled copy, without the network,
    unless ``revision`` asks for a particular revision on the Hub. Any other
    ``org/name`` is fetched from the Hub (``llmdeploy.hub``).
    """
    index = bundled_index()
    key = name_or_path.strip()
    by_hf = {row["hf_id"].lower(): name for name, row in index.items()}
    lowered = key.lower()
    if (lowered in index or lowered in by_hf) and revision is None:
        name = lowered if lowered in index else by_hf[lowered]
        row = index[name]
        record = HubRecord(
            repo_id=row["hf_id"], parameters_total=row["parameters"],
            source=f"recorded in llmdeploy/data/models/index.toml, retrieved {row['retrieved']}", recorded=True,
        )
        raw = _read_json(MODELS_DIR / f"{name}.json")
        return from_dict(raw, name=name, hf_id=row["hf_id"], origin="bundled", hub=record)
    path = Path(key).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"model directory {key!r} has no config.json.",
                              hint="Point at a Hugging Face model folder or its config.json.")
    if path.is_file():
        if revision is not None:
            raise UsageError(f"--revision {revision!r} applies to Hugging Face Hub ids, not to the local file {key!r}.")
        return from_dict(_read_json(path), name=path.parent.name if path.name == "config.json" else path.stem, origin=str(path))
    if path.exists():  # a FIFO, a device, a socket: reading could block or never end
        raise ConfigError(f"model config {key!r} is not a regular file.", hint="Point at a config.json or a model folder.")
    if key.startswith((".", "/", "~")) or key.endswith(".json"):
        raise ConfigError(f"no such model config file or folder: {key!r}.",
                          hint="Check the path, or use a bundled name (llmdeploy estimate --list-models) or a Hub id (org/name).")
    from llmdeploy import hub

    if hub.looks_like_hub_id(key) or (revision is not None and lowered in index):
        repo_id = index[lowered]["hf_id"] if lowered in index else key
        raw, record = hub.resolve(repo_id, revision=revision)
        at = (record.commit or record.revision or "main")[:12]
        return from_dict(raw, name=repo_id, hf_id=repo_id, origin=f"{repo_id}@{at} {record.source}", hub=record)
    raise UnknownChoiceError(
        "model", key, index,
        fix="Use a bundled name (llmdeploy estimate --list-models), a Hugging Face Hub id (org/name), "
            "or a path to a config.json or model folder.",
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


def from_dict(
    raw: dict[str, Any], *, name: str, hf_id: str | None = None, origin: str = "", hub: HubRecord | None = None
) -> ModelConfig:
    """Normalise a config.json; count its parameters now when no closed form applies (one line if nothing can)."""
    where = origin if origin and origin != "bundled" else name
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        what = "has no model_type" if model_type in (None, "") else f"has model_type {shown(model_type)}, not a name"
        raise ConfigError(f"model config {where} {what}, so its architecture is unknown.",
                          hint="A Hugging Face config.json names it (e.g. \"model_type\": \"llama\").")
    reader = _FAMILY_READERS.get(model_type, _generic)
    try:
        fields = reader(raw)
    except KeyError as exc:
        raise ConfigError(f"model config {where} ({model_type}) lacks the field {exc.args[0]}.") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model config {where} ({model_type}) has a malformed field: {exc}.") from None
    text = _text_section(raw)
    dtype = raw.get("torch_dtype") or raw.get("dtype") or text.get("torch_dtype") or text.get("dtype") or "float32"
    config = ModelConfig(
        name=name, model_type=model_type, hf_id=hf_id, origin=origin, native_dtype=_TORCH_DTYPES.get(str(dtype), "fp32"),
        hub=hub, **fields,
    )
    # Derived sizes too (head_dim = hidden / heads, GPT-2's n_inner), each 1..MAX_CONFIG_INT.
    for field_name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "max_positions"):
        value = getattr(config, field_name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_CONFIG_INT:
            raise ConfigError(f"model config {where}: {field_name} must be a whole number 1..{MAX_CONFIG_INT}, "
                              f"got {shown(value)}.")
    if config.n_kv_heads > config.n_heads:
        raise ConfigError(f"model config {where}: {config.n_kv_heads} key/value heads is more than its "
                          f"{config.n_heads} attention heads.")
    if model_type in CLOSED_FORM_FAMILIES:
        return config
    return _with_counted(config, raw, where)


def _with_counted(config: ModelConfig, raw: dict[str, Any], where: str) -> ModelConfig:
    """Attach exact counts from the meta device; else the Hub's count; else say, in one line, what is missing."""
    from dataclasses import replace

    from llmdeploy import metacount

    try:
        return replace(config, counted=metacount.count_parameters(raw))
    except metacount.CountUnavailable as exc:
        reason, missing = str(exc), exc.missing
    hub = config.hub
    if hub is not None and hub.parameters_total:
        # No count of our own: use the Hub's (exact for what the checkpoint stores), split as the config implies.
        embedding = config.vocab_size * config.d_model
        lm_head = 0 if config.tied_embeddings else embedding
        body = max(hub.parameters_total - embedding - lm_head, 0)
        whose = "published count" if hub.recorded else "the Hub's count"
        method = f"{whose}, {hub.source}: llmdeploy cannot count it ({reason})"
        if config.n_experts:
            method += "; the active share of this mixture of experts is unknown without it"
        counted = CountedParameters(embedding, 0, body, lm_head, 0, 0, method=method, from_hub=True)
        return replace(config, counted=counted)
    message = (f"cannot count the parameters of {where} (model_type {config.model_type!r}): {reason}; "
               f"closed forms exist for {', '.join(CLOSED_FORM_FAMILIES)}.")
    if missing:
        from llmdeploy.errors import MissingDependencyError

        raise MissingDependencyError(message, hint="Install it: pip install torch==2.13.0 && pip install 'llmdeploy[serve]'.")
    raise ConfigError(message)


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


def _text_section(raw: dict[str, Any]) -> dict[str, Any]:
    """A multimodal config's language model (``text_config``), else the config itself."""
    text = raw.get("text_config")
    return text if isinstance(text, dict) else raw


def _first(raw: dict[str, Any], keys: tuple[str, ...], default: Any = None, *, required: bool = True) -> Any:
    """The first of ``keys`` set (not null) in the text section or the top level, as an int."""
    for section in (_text_section(raw), raw):
        for key in keys:
            value = section.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{key} must be an integer, got {value!r}")
                return value
    if default is not None or not required:
        return default
    raise KeyError(f"{keys[0]!r}" + (f" (or {', '.join(keys[1:])})" if len(keys) > 1 else ""))


def _flag(raw: dict[str, Any], key: str) -> Any:
    text = _text_section(raw)
    return text.get(key, raw.get(key))


# Field names transformers' configs use for the same quantity, most common first.
_HIDDEN = ("hidden_size", "d_model", "n_embd", "n_embed", "dim", "model_dim", "embed_dim")
_HEADS = ("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_DECODER_LAYERS = ("decoder_layers", "num_decoder_layers", "num_layers", "num_hidden_layers")
_ENCODER_LAYERS = ("encoder_layers", "num_encoder_layers", "num_layers", "num_hidden_layers")
_FFN = ("intermediate_size", "ffn_dim", "n_inner", "d_ff", "ffn_hidden_size", "decoder_ffn_dim", "inner_hidden_size")
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_EXPERTS_PER_TOKEN = ("num_experts_per_tok", "num_experts_per_token", "moe_top_k", "top_k")
_POSITIONS = ("max_position_embeddings", "n_positions", "seq_length", "max_seq_len", "max_sequence_length")
_GATED_ACTIVATIONS = ("silu", "swish", "swiglu", "geglu", "reglu")


def _kv_heads(raw: dict[str, Any], heads: int) -> int:
    """Key/value heads: GQA (num_key_value_heads), multi-query (one shared head), else one per query head."""
    if "new_decoder_architecture" in _text_section(raw) or "new_decoder_architecture" in raw:
        # Falcon: the new architecture (40B, 180B) has num_kv_heads groups; the old one (7B) is
        # multi-query when multi_query is set, whatever num_kv_heads says (transformers' FalconAttention).
        if _flag(raw, "new_decoder_architecture"):
            return _first(raw, ("num_kv_heads", "n_head_kv", "num_key_value_heads"), heads)
        return 1 if _flag(raw, "multi_query") else heads
    kv = _first(raw, ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"), required=False)
    if kv is not None:
        return kv
    return 1 if _flag(raw, "multi_query") else heads


def _generic(raw: dict[str, Any]) -> dict[str, Any]:
    """Any architecture, from the field names transformers' configs use (and their aliases)."""
    encoder_decoder = bool(raw.get("is_encoder_decoder", False))
    d_model = _first(raw, _HIDDEN)
    heads = _first(raw, _HEADS)
    head_dim = _first(raw, ("head_dim", "d_kv", "attention_head_size"), required=False)
    if head_dim is None:
        if d_model % heads:
            raise ValueError(f"hidden size {d_model} is not a multiple of {heads} heads and there is no head_dim")
        head_dim = d_model // heads
    n_kv_heads = _kv_heads(raw, heads)
    latent = _first(raw, ("kv_lora_rank",), required=False)
    if latent:
        # Multi-head latent attention (DeepSeek-V2/V3): each layer caches one compressed latent per token,
        # kv_lora_rank + qk_rope_head_dim wide (transformers' cache and vLLM's alike), whatever the head count.
        # As one "KV head" whose keys and values together are that wide:
        n_kv_heads, head_dim = 1, -(-(latent + _first(raw, ("qk_rope_head_dim",), 0)) // 2)
    act = str(_flag(raw, "hidden_act") or _flag(raw, "activation_function") or _flag(raw, "hidden_activation") or "")
    experts = _first(raw, _EXPERTS, 0)
    return dict(
        encoder_decoder=encoder_decoder,
        vocab_size=_first(raw, ("vocab_size", "padded_vocab_size")),
        d_model=d_model,
        n_layers=_first(raw, _DECODER_LAYERS if encoder_decoder else _LAYERS),
        n_encoder_layers=_first(raw, _ENCODER_LAYERS) if encoder_decoder else 0,
        n_heads=heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        d_ff=_first(raw, _FFN, 4 * d_model),  # 4 × hidden where the config leaves it implicit (Bloom, Falcon)
        gated_mlp=any(a in act.lower() for a in _GATED_ACTIVATIONS) or str(raw.get("feed_forward_proj", "")).startswith("gated-"),
        tied_embeddings=bool(_flag(raw, "tie_word_embeddings") if _flag(raw, "tie_word_embeddings") is not None else True),
        attention_bias=bool(_flag(raw, "attention_bias") or _flag(raw, "bias")),
        max_positions=_first(raw, _POSITIONS, 2048),
        n_experts=experts if experts > 1 else 0,
        n_experts_per_token=_first(raw, _EXPERTS_PER_TOKEN, 0) if experts > 1 else 0,
    )


_FAMILY_READERS = {"t5": _t5, "llama": _llama_like, "mistral": _llama_like, "qwen2": _llama_like, "gpt2": _gpt2}
