"""`llmdeploy serve`: the SageMaker-compatible endpoint on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from llmdeploy.cli.options import Number, Whole
from llmdeploy.handlers.serving_config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_NUM_BEAMS,
    DEFAULT_MAX_REQUEST_TOKENS,
    DEFAULT_MAX_SLOTS,
)

BATCHING_MODES = ("continuous", "static")  # = handlers.endpoint.BATCHING_MODES (that module imports aiohttp)


@click.command(
    epilog="""\b
Examples:
  llmdeploy serve --model ./flan-t5-small
  llmdeploy serve --model ./flan-t5-small --port 8081 --max-slots 64
  llmdeploy serve --model ./flan-t5-small --backend ctranslate2 --max-batch-size 32
  curl -s localhost:8080/invocations -H 'content-type: application/json' \\
       -d '{"inputs": "translate English to German: hello", "parameters": {"max_new_tokens": 32}}'
""",
)
@click.option("--model", "model_dir", required=True, metavar="DIR", help="Model folder (config.json, weights, tokenizer).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=Whole(0, 65535), default=8080, show_default=True)
@click.option("--batching", type=click.Choice(BATCHING_MODES), default="continuous", show_default=True,
              help="continuous: requests join the running decode at every step (T5 on transformers); "
                   "static: whole batches (always for ctranslate2).")
@click.option("--max-slots", type=Whole(1, 1024), default=DEFAULT_MAX_SLOTS, show_default=True,
              help="Sequences decoded together (continuous batching).")
@click.option("--max-batch-size", type=Whole(1, 1024), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Most requests in one static batch.")
@click.option("--max-batch-delay-ms", type=Number(0, 60_000), default=float(DEFAULT_MAX_BATCH_DELAY_MS),
              show_default=True, help="Longest wait for a static batch to fill after its first request.")
@click.option("--backend", type=click.Choice(("transformers", "ctranslate2")), default="transformers",
              show_default=True)
@click.option("--dtype", type=click.Choice(("auto", "fp32", "fp16", "bf16", "int8")), default="auto",
              show_default=True)
@click.option("--max-new-tokens", type=Whole(1, 65_536), default=DEFAULT_MAX_NEW_TOKENS, show_default=True,
              help="Cap on max_new_tokens per request.")
@click.option("--max-num-beams", type=Whole(1, 64), default=DEFAULT_MAX_NUM_BEAMS, show_default=True,
              help="Cap on num_beams per request.")
@click.option("--max-request-tokens", type=Whole(1, 10_000_000), default=DEFAULT_MAX_REQUEST_TOKENS,
              show_default=True, help="Budget per request: max_new_tokens x num_beams x inputs; more is answered 400.")
@click.option("--max-body-bytes", type=Whole(1, 1 << 30), default=1 << 20, show_default=True,
              help="Larger request bodies are answered 413.")
@click.option("--request-timeout", type=Number(above=0, maximum=86_400), default=60.0, show_default=True,
              help="Seconds before a request is answered 504 (it leaves the decode at the next step).")
@click.option("--header-timeout", type=Number(above=0, maximum=3600), default=10.0, show_default=True,
              help="Seconds a connection may take to send its request headers (then it is closed).")
@click.option("--body-timeout", type=Number(above=0, maximum=3600), default=10.0, show_default=True,
              help="Seconds a client may take to send its request body (then 408).")
@click.option("--grace-period", type=Number(0, 3600), default=30.0, show_default=True,
              help="On SIGTERM/SIGINT: seconds running requests get to finish; the rest are answered 503 and the "
                   "process exits (at the latest 2 s later).")
def serve(model_dir, host, port, batching, max_slots, max_batch_size, max_batch_delay_ms, backend, dtype,
          max_new_tokens, max_num_beams, max_request_tokens, max_body_bytes, request_timeout, header_timeout,
          body_timeout, grace_period):
    """Serve GET /ping and POST /invocations until SIGTERM/SIGINT (then finish in-flight requests)."""
    import asyncio
    import logging

    from llmdeploy.errors import ConfigError, MissingDependencyError, UsageError

    path = Path(model_dir)
    if not path.is_dir():
        raise UsageError(f"--model {model_dir!r} is not a folder.", hint="Give a save_pretrained() model folder.")
    if not (path / "config.json").is_file():
        raise ConfigError(f"--model {model_dir!r} has no config.json; expected a transformers model folder.")
    try:
        from llmdeploy.handlers.endpoint import EndpointSettings, build_service, serve_forever
        from llmdeploy.handlers.serving_config import HandlerError, MissingBackendError
    except ImportError as exc:
        raise MissingDependencyError(f"serving needs the 'serve' extra ({exc.name} is missing): "
                                     "pip install 'llmdeploy[serve]'") from None

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"loading {model_dir} ({backend}, dtype {dtype})...", err=True)
    try:
        service = build_service(str(path), backend=backend, dtype=dtype, max_batch_size=max_batch_size,
                                max_new_tokens_cap=max_new_tokens, max_num_beams=max_num_beams,
                                max_request_tokens=max_request_tokens)
    except MissingBackendError as exc:
        raise MissingDependencyError(str(exc)) from None
    except (HandlerError, ValueError, OSError) as exc:
        raise ConfigError(f"could not load {model_dir!r}: {exc}") from None
    settings = EndpointSettings(max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms,
                                max_body_bytes=max_body_bytes, request_timeout_s=request_timeout,
                                grace_s=grace_period, header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                                batching=batching, max_slots=max_slots)

    def ready(bound_port: int) -> None:
        click.echo(f"serving on http://{host}:{bound_port} (POST /invocations, GET /ping); Ctrl-C to stop", err=True)

    try:
        asyncio.run(serve_forever(service, settings, host=host, port=port, on_ready=ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo("stopped", err=True)
