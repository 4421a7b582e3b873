"""Fixtures for the serving tests: a tiny random FLAN-T5-shaped model built offline."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # djl_double

TINY_WORDS = [f"w{i}" for i in range(240)]


def build_tiny_t5(path: Path, *, d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, seed=0) -> Path:
    """A FLAN-T5-shaped random model (gated-gelu, an lm_head of its own) + a word-level tokenizer.

    Like google/flan-t5-*, the checkpoint stores lm_head.weight apart from the embeddings with
    ``tie_word_embeddings: false``. transformers 5 ties T5's head on construction whatever the
    config says, so the head is untied by hand there; 4.x builds it untied already.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    corpus = [" ".join(TINY_WORDS[(j * 7 + k) % len(TINY_WORDS)] for k in range(16)) for j in range(120)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(vocab_size=300,
                                                              special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=512)
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_heads=num_heads,
                      num_layers=num_layers, num_decoder_layers=num_layers, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    if model.lm_head.weight is model.shared.weight:  # transformers 5
        head = torch.randn(model.shared.weight.shape, generator=torch.Generator().manual_seed(seed + 1))
        model.lm_head.weight = torch.nn.Parameter(head * model.config.initializer_factor)
        model.config.tie_word_embeddings = False
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-flan-t5"))


@pytest.fixture(scope="session")
def eos_prone_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its EOS row of lm_head set to 1.05 x the row of its most frequent greedy token: greedy
    decoding then ends early at varied steps (where that token would win), so min_new_tokens changes the output."""
    import collections

    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = tokenizer(EOS_PRONE_PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=12,
                             min_new_tokens=12, do_sample=False)
        common = collections.Counter(out[:, 1:].flatten().tolist()).most_common(1)[0][0]
        model.lm_head.weight[model.config.eos_token_id] = model.lm_head.weight[common] * 1.05
    path = tmp_path_factory.mktemp("eos-prone-t5")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


EOS_PRONE_PROMPTS = [f"w{i} w{i * 3 % 200} w{i * 7 % 200}" for i in range(1, 30)]


@pytest.fixture(scope="session")
def tiny_config(tiny_model_dir):
    from llmdeploy.handlers.serving_config import parse_properties

    return parse_properties({"option.model_id": str(tiny_model_dir), "option.max_new_tokens": "16",
                             "batch_size": "8"})


@pytest.fixture(scope="session")
def tiny_engine(tiny_config):
    from llmdeploy.handlers.precision import CPU
    from llmdeploy.handlers.seq2seq import TransformersEngine

    return TransformersEngine.load(tiny_config.model_location(), tiny_config, device=CPU)


@pytest.fixture(scope="session")
def tiny_ct2_dir(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("ctranslate2")
    from llmdeploy.handlers.seq2seq import convert_to_ctranslate2

    return convert_to_ctranslate2(str(tiny_model_dir), tmp_path_factory.mktemp("ct2") / "model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeEngine:
    """Stands in for a seq2seq engine: echoes, records calls, can sleep or run out of memory.

    Batches as the real engines do (seq2seq._TokenizingEngine): rows of one call may differ in their lengths
    (``per_row``), and the service groups requests by ``batch_key``.
    """

    name = "fake"
    from llmdeploy.handlers.seq2seq import _TokenizingEngine

    per_row = _TokenizingEngine.per_row
    batch_key = _TokenizingEngine.batch_key
    del _TokenizingEngine

    def __init__(self, *, delay_s: float = 0.0, oom_above: int | None = None, oom_message="CUDA out of memory"):
        self.delay_s = delay_s
        self.oom_above = oom_above
        self.oom_message = oom_message
        self.calls: list[tuple[list[str], dict]] = []
        self.stopped: list[list[str]] = []  # batches whose every row was cancelled before the end
        self.max_input_tokens = 512

    @property
    def generate_calls(self) -> int:
        return len(self.calls)

    def generate(self, texts, params, stop=None):
        """Like the engines: ``stop(row)`` is asked every 10 ms while it "decodes"; a stopped row ends early."""
        import time

        from llmdeploy.handlers.seq2seq import row_params

        rows = row_params(params, len(texts))
        assert len({self.batch_key(p) for p in rows}) == 1, "one call holds rows that must share their parameters"
        self.calls.append((list(texts), rows))
        if self.oom_above is not None and len(texts) > self.oom_above:
            raise RuntimeError(self.oom_message)
        deadline = time.monotonic() + self.delay_s
        while time.monotonic() < deadline:
            if stop is not None and all(stop(row) for row in range(len(texts))):
                self.stopped.append(list(texts))
                break
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        return [f"echo:{t}:{p.get('max_new_tokens')}" for t, p in zip(texts, rows, strict=True)]


@pytest.fixture
def fake_service():
    from llmdeploy.handlers.lmi_service import Seq2SeqService
    from llmdeploy.handlers.serving_config import parse_properties

    def make(**engine_kwargs):
        engine = FakeEngine(**engine_kwargs)
        return Seq2SeqService(engine=engine, config=parse_properties({"option.max_new_tokens": "32"}))

    return make


def serving_properties(rolling: bool = False, **options) -> str:
    """serving.properties text as `llmdeploy package` writes it, with ``option.<key>`` overrides.

    ``rolling=False`` (the static contract: DJL's dynamic batches) is what package writes for static batches
    (ctranslate2, or transformers with batching static / auto); ``rolling=True`` is the transformers backend with
    batching continuous (the rolling batch).
    """
    from llmdeploy.containers.package import PackageSettings, render_serving_properties

    if not rolling:
        options.setdefault("rolling_batch", "disable")
    settings = PackageSettings(batching="continuous" if rolling else "static")
    text = render_serving_properties(settings, with_weights=False)
    lines = [line for line in text.splitlines() if not any(line.startswith(f"option.{k}=") for k in options)]
    lines += [f"option.{k}={v}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def djl_for(service, model_dir: str = "/opt/ml/model"):
    """DJL's Java side in front of ``service``, through the djl_python engine double (see djl_double.py)."""
    from types import SimpleNamespace

    from djl_double import Djl, Output, PythonEngine

    module = SimpleNamespace(handle=lambda inputs: service.handle(inputs, Output))
    return Djl(PythonEngine(module, model_dir))
