"""Sequence-to-sequence engines (FLAN-T5 first): transformers, and CTranslate2 as an option.

Both take a list of texts and their generation parameters and answer with one padded batch:
``engine.generate(texts, params) -> list[str]``, ``params`` one dict for every row or one dict
per row. Rows of one call share every parameter but those ``per_row(params)`` names (the
lengths, max_new_tokens / min_new_tokens, outside beam search): the batch runs to its longest
row and each row stops at its own length, with the tokens it would get alone (static batches
group requests by ``batch_key``). ``stop(row) -> bool``, when given, is asked at every decode
step and ends that row early: a cancelled request. Inputs longer than the model's context
(T5: 512 tokens) are truncated with a logged warning.
The transformers engine also offers ``decode_loop()``, the iteration-level loop of
decode.py, which `llmdeploy serve` and the DJL rolling-batch path run.
Imports: stdlib + torch + transformers; ctranslate2 and bitsandbytes only when asked.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

try:
    from .compat import (
        MODEL_CONFIG,
        TOKENIZER_CONFIG,
        dtype_keyword,
        dumps,
        major_version,
        model_config_for_v4,
        read_json,
        tokenizer_config_for_v4,
    )
    from .precision import DeviceInfo, Precision, apply_precision, choose_precision, detect_device, torch_dtype
    from .serving_config import (
        DEFAULT_CONTEXT_TOKENS,
        DEFAULT_REQUEST_NEW_TOKENS,
        MissingBackendError,
        ServingConfig,
        ServingConfigError,
    )
except ImportError:  # copied flat next to model.py in the container
    from compat import (  # type: ignore[no-redef]
        MODEL_CONFIG,
        TOKENIZER_CONFIG,
        dtype_keyword,
        dumps,
        major_version,
        model_config_for_v4,
        read_json,
        tokenizer_config_for_v4,
    )
    from precision import DeviceInfo, Precision, apply_precision, choose_precision, detect_device, torch_dtype  # type: ignore[no-redef]
    from serving_config import (  # type: ignore[no-redef]
        DEFAULT_CONTEXT_TOKENS,
        DEFAULT_REQUEST_NEW_TOKENS,
        MissingBackendError,
        ServingConfig,
        ServingConfigError,
    )

log = logging.getLogger("llmdeploy.handlers.seq2seq")

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")
_HF_GENERATE_KEYS = ("max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p",
                     "num_beams", "repetition_penalty", "no_repeat_ngram_size", "length_penalty", "early_stopping")
LENGTHS = ("max_new_tokens", "min_new_tokens")


def row_params(params, rows: int) -> list[dict]:
    """One parameter dict per row: ``params`` is one dict for every row, or already one per row."""
    if isinstance(params, dict):
        return [params] * rows
    params = list(params)
    if len(params) != rows:
        raise ValueError(f"{len(params)} parameter sets for {rows} texts")
    return params


def new_tokens(params: dict) -> tuple[int, int]:
    """(min_new_tokens, max_new_tokens) of one row."""
    return int(params.get("min_new_tokens", 0)), int(params.get("max_new_tokens", DEFAULT_REQUEST_NEW_TOKENS))


def context_length(model_config, tokenizer, override: int | None = None) -> int:
    """Longest input the model was trained on: override, config n_positions, tokenizer limit, 512."""
    if override:
        return int(override)
    n_positions = getattr(model_config, "n_positions", None)
    if isinstance(n_positions, int) and n_positions > 0:
        return n_positions
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    return DEFAULT_CONTEXT_TOKENS


def _transformers():
    """The transformers module, or a MissingBackendError saying how this container lacks it."""
    try:
        import transformers
    except ImportError:
        raise MissingBackendError(
            "transformers is not installed in this container. The LMI GPU images ship it; the djl-inference CPU "
            "image gets it from model.tar.gz's requirements.txt at start-up (look for DJL's 'pip install' lines "
            "above: the endpoint needs to reach PyPI), or pip install 'transformers>=4.51.3'") from None
    return transformers


def load_tokenizer(location: str):
    """AutoTokenizer for ``location``; a folder written by transformers 5 is adapted for 4.x (see compat.py).

    The adapted copy holds only the small tokenizer files, in a temporary folder removed after loading.
    """
    transformers = _transformers()
    if major_version(transformers.__version__) < 5 and os.path.isdir(location):
        names = {n for n in os.listdir(location) if os.path.isfile(os.path.join(location, n))}
        config = read_json(os.path.join(location, TOKENIZER_CONFIG))
        fixed = tokenizer_config_for_v4(config, names) if config is not None else None
        if fixed is not None:
            log.info("%s/%s was written by transformers 5: loading an adapted copy under transformers %s",
                     location, TOKENIZER_CONFIG, transformers.__version__)
            with tempfile.TemporaryDirectory(prefix="llmdeploy-tokenizer-") as tmp:
                for name in names:
                    if name != TOKENIZER_CONFIG and not name.endswith(_WEIGHT_SUFFIXES):
                        shutil.copyfile(os.path.join(location, name), os.path.join(tmp, name))
                with open(os.path.join(tmp, TOKENIZER_CONFIG), "w", encoding="utf-8") as fh:
                    fh.write(dumps(fixed))
                return transformers.AutoTokenizer.from_pretrained(tmp)
    return transformers.AutoTokenizer.from_pretrained(location)


def load_seq2seq_model(location: str, dtype, **kwargs):
    """AutoModelForSeq2SeqLM at ``dtype`` under transformers 4.x or 5 with the checkpoint's own head semantics.

    Under 4.x a T5 config written by transformers 5 gets ``tie_word_embeddings`` back from
    ``scale_decoder_outputs`` (compat.model_config_for_v4), and an untied model whose checkpoint
    stores no ``lm_head.weight`` (transformers 5 tied it to the embeddings, unscaled) gets the
    embeddings copied into its head, which is what transformers 5 computes.
    """
    transformers = _transformers()
    kwargs[dtype_keyword(transformers.__version__)] = dtype
    if major_version(transformers.__version__) < 5 and os.path.isdir(location):
        raw = read_json(os.path.join(location, MODEL_CONFIG))
        fixed = model_config_for_v4(raw) if raw is not None else None
        if fixed is not None:
            config = transformers.AutoConfig.from_pretrained(location)
            config.tie_word_embeddings = fixed["tie_word_embeddings"]
            kwargs["config"] = config
            log.info("%s/%s was written by transformers 5: tie_word_embeddings=%s for transformers %s",
                     location, MODEL_CONFIG, config.tie_word_embeddings, transformers.__version__)
    model, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(location, output_loading_info=True, **kwargs)
    head = model.get_output_embeddings()
    if "lm_head.weight" in info.get("missing_keys", ()) and head is not None \
            and not getattr(model.config, "tie_word_embeddings", False):
        import torch

        log.info("%s stores no lm_head.weight: the head takes the input embeddings (tied, unscaled)", location)
        with torch.no_grad():
            head.weight.copy_(model.get_input_embeddings().weight)
    return model


class _TokenizingEngine:
    """Shared: tokenise with truncation to the context, count generate calls."""

    name = "base"

    def __init__(self, tokenizer, max_input_tokens: int):
        self.tokenizer = tokenizer
        self.max_input_tokens = int(max_input_tokens)
        self.generate_calls = 0
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> list[list[int]]:
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        out = []
        for text_ids in ids:
            if len(text_ids) > self.max_input_tokens:
                log.warning("input of %d tokens truncated to the model's context of %d tokens",
                            len(text_ids), self.max_input_tokens)
                keep_eos = eos is not None and text_ids[-1] == eos
                text_ids = text_ids[: self.max_input_tokens - 1] + [eos] if keep_eos else \
                    text_ids[: self.max_input_tokens]
            out.append(list(text_ids))
        return out

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def per_row(self, params: dict) -> tuple[str, ...]:
        """The parameters each row of one call may set for itself: its lengths, except in beam search (beams are
        scored against the batch's max_length, and a stopped row's beams would still be reordered)."""
        return () if int(params.get("num_beams", 1)) > 1 else LENGTHS

    def batch_key(self, params: dict) -> tuple:
        """What requests must have in common to share one call (a static batch groups them by it)."""
        own = self.per_row(params)
        return tuple(sorted((k, v) for k, v in params.items() if k not in own))

    def generate(self, texts: list[str], params, stop=None) -> list[str]:
        return self.decode(self.generate_ids(texts, params, stop=stop))

    def generate_ids(self, texts: list[str], params, stop=None) -> list[list[int]]:  # pragma: no cover
        raise NotImplementedError

    def decode_loop(self):
        """The iteration-level loop for this engine, or None when it has none (static batches only)."""
        return None


class TransformersEngine(_TokenizingEngine):
    name = "transformers"

    def __init__(self, model, tokenizer, *, device: DeviceInfo, precision: Precision,
                 max_input_tokens: int | None = None):
        super().__init__(tokenizer, context_length(model.config, tokenizer, max_input_tokens))
        self.model = model
        self.device = device
        self.precision = precision

    @classmethod
    def load(cls, location: str, config: ServingConfig, *, device: DeviceInfo | None = None) -> TransformersEngine:
        device = device or detect_device(config.device)
        precision = choose_precision(config.dtype, device)
        log.info("loading %s on %s (%s): %s", location, device.name, precision.dtype, precision.reason)
        tokenizer = load_tokenizer(location)
        kwargs: dict = {}
        if precision.load_in_8bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            kwargs["device_map"] = {"": device.index}
        model = load_seq2seq_model(location, torch_dtype(precision), **kwargs)
        if not model.config.is_encoder_decoder:
            raise ServingConfigError(f"{location} is not a sequence-to-sequence model "
                                     f"({model.config.model_type}); this handler serves encoder-decoder models")
        kept = apply_precision(model, precision)
        if kept:
            log.info("kept %d modules in fp32 (%s)", len(kept), ", ".join(precision.keep_in_fp32))
        if not precision.load_in_8bit:
            model.to(device.torch_device)
        model.eval()
        return cls(model, tokenizer, device=device, precision=precision, max_input_tokens=config.max_input_tokens)

    def generation_kwargs(self, params: dict) -> dict:
        kwargs = {k: params[k] for k in _HF_GENERATE_KEYS if k in params}
        kwargs.setdefault("do_sample", False)
        return kwargs

    def generate_ids(self, texts: list[str], params, stop=None) -> list[list[int]]:
        """Token ids per row, up to and with its EOS: what ``generate`` gives that row alone.

        Rows differing in their lengths (``per_row``) run in one ``generate`` call to the longest; a stopping
        criterion ends each row at its own max_new_tokens and a logits processor keeps each row's EOS out until
        its own min_new_tokens, as generate's MinNewTokensLengthLogitsProcessor does for a whole batch.
        """
        import torch

        rows = row_params(params, len(texts))
        lengths = [new_tokens(p) for p in rows]
        ids = self.encode(texts)
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        with self._lock:
            self.generate_calls += 1
            self.batch_sizes.append(len(texts))
        kwargs = self.generation_kwargs(rows[0])
        mixed = len(set(lengths)) > 1
        if mixed:
            kwargs["max_new_tokens"] = max(high for _, high in lengths)
            kwargs.pop("min_new_tokens", None)
            if any(low for low, _ in lengths):
                kwargs["logits_processor"] = _row_min_new_tokens([low for low, _ in lengths], self.eos_ids)
        if stop is not None or mixed:
            kwargs["stopping_criteria"] = _stopping_criteria(stop, len(texts),
                                                             [high for _, high in lengths] if mixed else None)
        with torch.inference_mode():
            out = self.model.generate(**batch, **kwargs)
        # Drop the decoder start token; a row ends at its first EOS or its own max_new_tokens (after that, pad).
        return [_cut(row[1:].tolist(), high, self.eos_ids) for row, (_, high) in zip(out.cpu(), lengths, strict=True)]

    @property
    def eos_ids(self) -> tuple[int, ...]:
        try:
            from .decode import _eos_ids
        except ImportError:
            from decode import _eos_ids  # type: ignore[no-redef]
        return _eos_ids(self.model)

    def decode_loop(self):
        try:
            from .decode import T5DecodeLoop
        except ImportError:
            from decode import T5DecodeLoop  # type: ignore[no-redef]
        if getattr(self.model.config, "model_type", "") not in ("t5", "mt5"):
            return None
        return T5DecodeLoop(self.model, pad_token_id=self.tokenizer.pad_token_id)


def _cut(ids: list[int], most: int, eos_ids) -> list[int]:
    """``ids`` up to its first EOS (kept) and at most ``most`` tokens: what generate returns for the row alone."""
    ids = ids[:most]
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1]
    return ids


def _stopping_criteria(stop, texts: int, most: list[int] | None = None):
    """transformers StoppingCriteria ending text i's rows when ``stop(i)`` is true or, with ``most``, once they hold
    ``most[i]`` new tokens. generate asks it about batch-major rows: one per text, num_beams per text, or (beam
    search) its 2 x num_beams candidates per text."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            rows = input_ids.shape[0]
            per_text = max(1, rows // texts)
            made = input_ids.shape[1] - 1  # new tokens so far: the decoder's input_ids start with decoder_start
            flags = [(most is not None and made >= most[r // per_text]) or (stop is not None and bool(stop(r // per_text)))
                     for r in range(rows)]
            return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


def _row_min_new_tokens(least: list[int], eos_ids):
    """A LogitsProcessor keeping EOS out of row i until it has ``least[i]`` new tokens (greedy and sampling, one
    sequence per row): MinNewTokensLengthLogitsProcessor per row. generate runs custom processors after its own
    and before temperature / top-k / top-p, where its own min_new_tokens would run."""
    import math

    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class _RowMinNewTokens(LogitsProcessor):
        def __call__(self, input_ids, scores):
            made = input_ids.shape[1] - 1
            rows = [r for r, low in enumerate(least) if made < low]
            if rows and eos_ids:
                scores = scores.clone()
                index = torch.tensor(rows, device=scores.device)
                scores[index[:, None], torch.tensor(list(eos_ids), device=scores.device)[None, :]] = -math.inf
            return scores

    return LogitsProcessorList([_RowMinNewTokens()])


def _default_ct2_dir(location: str) -> Path:
    src = Path(location).resolve()
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}"
                     for p in sorted(src.iterdir()) if p.is_file())
    digest = hashlib.sha256(f"{src}|{stamp}".encode()).hexdigest()[:16]
    base = Path(os.environ.get("LLMDEPLOY_CACHE", Path.home() / ".cache" / "llmdeploy"))
    return base / "ct2" / digest


def _converter_class() -> type:
    """TransformersConverter that keeps T5's output scaling consistent with transformers 5.

    transformers 5 always sets ``T5Config.tie_word_embeddings = True`` and records the
    checkpoint's real choice in ``scale_decoder_outputs`` (False for T5 v1.1 / FLAN-T5).
    CTranslate2's T5 loader scales decoder outputs by d_model**-0.5 when tie_word_embeddings
    is true, which would change every log-probability (beam search, sampling) relative to
    the transformers model. Report the checkpoint's choice to the converter instead.
    """

    from ctranslate2.converters import TransformersConverter

    class _Converter(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            # ctranslate2 4.8 passes transformers 5's ``dtype=``; 4.x (the LMI images' 4.51) takes ``torch_dtype``.
            import transformers

            if "dtype" in kwargs and dtype_keyword(transformers.__version__) != "dtype":
                kwargs["torch_dtype"] = kwargs.pop("dtype")
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            config = model.config
            if getattr(config, "model_type", "") == "t5" and hasattr(config, "scale_decoder_outputs"):
                config.tie_word_embeddings = bool(config.scale_decoder_outputs)
            return model

    return _Converter


def convert_to_ctranslate2(location: str, output_dir: str | os.PathLike | None = None, *,
                           quantization: str | None = None, force: bool = False) -> Path:
    """Convert a local transformers T5 folder with ctranslate2's TransformersConverter (offline)."""
    if importlib.util.find_spec("ctranslate2") is None:
        raise MissingBackendError("the ctranslate2 backend needs ctranslate2: pip install 'llmdeploy[ctranslate2]'")
    if not Path(location).is_dir():
        raise ServingConfigError(f"ctranslate2 conversion needs a local model folder, got {location!r}")
    out = Path(output_dir) if output_dir else _default_ct2_dir(location)
    if (out / "model.bin").is_file() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        log.info("converting %s to CTranslate2 in %s", location, out)
        _converter_class()(str(location)).convert(str(tmp), quantization=quantization, force=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class CTranslate2Engine(_TokenizingEngine):
    name = "ctranslate2"

    def __init__(self, translator, tokenizer, *, max_input_tokens: int):
        super().__init__(tokenizer, max_input_tokens)
        self.translator = translator

    @classmethod
    def load(cls, location: str, config: ServingConfig, *, ct2_dir: str | os.PathLike | None = None,
             device: DeviceInfo | None = None, compute_type: str | None = None,
             intra_threads: int = 0) -> CTranslate2Engine:
        import ctranslate2
        from transformers import AutoConfig

        device = device or detect_device(config.device)
        ct2_dir = ct2_dir or config.ct2_location()
        if ct2_dir is not None and (Path(ct2_dir) / "model.bin").is_file():
            converted = Path(ct2_dir)  # converted by `llmdeploy package` (model.tar.gz's ct2/)
        else:
            converted = convert_to_ctranslate2(location, ct2_dir)
        if compute_type is None:
            compute_type = ct2_compute_type(config.dtype, device)
        if device.kind == "cuda":
            preload_cublas12()
        if not intra_threads:
            try:
                import torch

                intra_threads = torch.get_num_threads()
            except ImportError:  # pragma: no cover
                intra_threads = 0
        translator = ctranslate2.Translator(str(converted), device=device.kind,
                                            device_index=device.index, compute_type=compute_type,
                                            inter_threads=1, intra_threads=intra_threads)
        tokenizer = load_tokenizer(location)
        ctx = context_length(AutoConfig.from_pretrained(location), tokenizer, config.max_input_tokens)
        return cls(translator, tokenizer, max_input_tokens=ctx)

    def per_row(self, params: dict) -> tuple[str, ...]:
        """Greedy rows may differ in both lengths; sampled rows only in max_new_tokens (translate_batch has one
        min_decoding_length, and the rerun that gives a greedy row its own minimum would change what a sampled
        row is drawn from); beam search shares everything (the callback that ends a row needs beam_size 1)."""
        if int(params.get("num_beams", 1)) > 1:
            return ()
        return ("max_new_tokens",) if params.get("do_sample") else LENGTHS

    @staticmethod
    def translate_kwargs(params: dict) -> dict:
        low, high = new_tokens(params)
        kwargs: dict[str, int | float] = {
            "max_decoding_length": high,
            "min_decoding_length": low,
            "beam_size": int(params.get("num_beams", 1)),
            "max_batch_size": 0,
        }
        if params.get("do_sample"):
            kwargs["sampling_topk"] = int(params.get("top_k", 0))
            kwargs["sampling_topp"] = float(params.get("top_p", 1.0))
            kwargs["sampling_temperature"] = float(params.get("temperature", 1.0))
        if "repetition_penalty" in params:
            kwargs["repetition_penalty"] = float(params["repetition_penalty"])
        if "no_repeat_ngram_size" in params:
            kwargs["no_repeat_ngram_size"] = int(params["no_repeat_ngram_size"])
        if "length_penalty" in params:
            kwargs["length_penalty"] = float(params["length_penalty"])
        return kwargs

    def generate_ids(self, texts: list[str], params, stop=None) -> list[list[int]]:
        source = [self.tokenizer.convert_ids_to_tokens(ids) for ids in self.encode(texts)]
        with self._lock:
            self.generate_calls += 1
            self.batch_sizes.append(len(texts))
        return self._translate(source, row_params(params, len(texts)), stop, list(range(len(texts))))

    def _translate(self, source: list[list[str]], rows: list[dict], stop, index: list[int]) -> list[list[int]]:
        """One translate_batch to the longest row, each row ended by the callback at its own max_new_tokens (with
        beam_size 1, CTranslate2's GreedySearch finishes just that row when the callback returns True, keeping the
        token it reported: src/decoding.cc). The batch's min_decoding_length is its lowest min_new_tokens: a greedy
        row's tokens do not depend on it until EOS would be the best token, so only a row that ended before its
        own min_new_tokens got other tokens than it would alone; those are decoded again with theirs (the rows with
        the lowest minimum are settled at each round, so this ends)."""
        lengths = [new_tokens(p) for p in rows]
        kwargs = self.translate_kwargs(rows[0])
        kwargs["min_decoding_length"] = min(low for low, _ in lengths)
        kwargs["max_decoding_length"] = max(high for _, high in lengths)
        mixed = len({high for _, high in lengths}) > 1
        if kwargs["beam_size"] == 1 and (stop is not None or mixed):
            # Called for every token of every row (beam_size 1 only); True ends that row.
            kwargs["callback"] = lambda step: (step.step + 1 >= lengths[step.batch_id][1]
                                               or (stop is not None and bool(stop(index[step.batch_id]))))
        results = self.translator.translate_batch(source, **kwargs)
        ids = [self.tokenizer.convert_tokens_to_ids(r.hypotheses[0]) for r in results]
        again = [i for i, row in enumerate(ids)
                 if len(row) < lengths[i][0] and not (stop is not None and stop(index[i]))]
        if again:
            redone = self._translate([source[i] for i in again], [rows[i] for i in again], stop,
                                     [index[i] for i in again])
            for i, row in zip(again, redone, strict=True):
                ids[i] = row
        return ids


def ct2_compute_type(dtype: str, device: DeviceInfo) -> str:
    """CTranslate2's compute_type for option.dtype on ``device``.

    CPU: int8 for auto and int8 (int8 weights and matmuls, CTranslate2's fast path there), float32 for fp32;
    fp16/bf16 are not CPU types. CUDA: auto is bfloat16 on compute capability >= 8.0 and float16 below (as the
    transformers engine); int8 is int8_float16 (int8 weights, fp16 activations).
    """
    if device.kind == "cpu":
        return "float32" if dtype == "fp32" else "int8"
    if dtype == "auto":
        return "bfloat16" if device.supports_bf16 else "float16"
    return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8_float16"}[dtype]


def preload_cublas12() -> None:
    """Load cuBLAS 12 from the nvidia-cublas-cu12 wheel when the system has none (CUDA 13 LMI images).

    CTranslate2's wheels are built against CUDA 12 and open ``libcublas.so.12`` by name; LMI 0.36's image is
    CUDA 13 (cuBLAS 13 only). A library already loaded with RTLD_GLOBAL satisfies that dlopen. Nothing
    happens when the system's loader finds cuBLAS 12 itself (LMI 0.33-0.35, CUDA 12.8) or the wheel is absent.
    """
    import ctypes
    import importlib.util

    try:
        ctypes.CDLL("libcublas.so.12", mode=ctypes.RTLD_GLOBAL)
        return
    except OSError:
        pass
    spec = importlib.util.find_spec("nvidia.cublas")
    if spec is None or not spec.submodule_search_locations:
        log.warning("libcublas.so.12 not found and the nvidia-cublas-cu12 wheel is not installed: CTranslate2 "
                    "will fail on this GPU")
        return
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    for name in ("libcublasLt.so.12", "libcublas.so.12"):
        if (lib / name).is_file():
            ctypes.CDLL(str(lib / name), mode=ctypes.RTLD_GLOBAL)
            log.info("loaded %s for CTranslate2", lib / name)


def load_engine(config: ServingConfig, *, device: DeviceInfo | None = None, ct2_dir=None):
    location = config.model_location()
    if config.backend == "ctranslate2":
        return CTranslate2Engine.load(location, config, ct2_dir=ct2_dir, device=device)
    return TransformersEngine.load(location, config, device=device)
