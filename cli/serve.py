"""`llmdeploy serve`: the SageMaker-compatible endpoint on this machine."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    epilog="""\b
Examples:
  llmdeploy serve --model ./flan-t5-small
  llmdeploy serve --model ./flan-t5-small --port 8081 --max-batch-size 16 --backend ctranslate2
  curl -s localhost:8080/invocations -H 'content-type: application/json' \\
       -d '{"inputs": "translate English to German: hello", "parameters": {"max_new_tokens": 32}}'
""",
)
@click.option("--model", "model_dir", required=True, metavar="DIR", help="Model folder (config.json, weights, tokenizer).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--max-batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most requests run together in one generate call.")
@click.option("--max-batch-delay-ms", type=click.FloatRange(min=0), default=50.0, show_default=True,
              help="Longest wait for a batch to fill after its first request.")
@click.option("--backend", type=click.Choice(("transformers", "ctranslate2")), default="transformers",
              show_default=True)
@click.option("--dtype", type=click.Choice(("auto", "fp32", "fp16", "bf16", "int8")), default="auto",
              show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="Cap on max_new_tokens per request.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=1 << 20, show_default=True,
              help="Larger request bodies are answered 413.")
@click.option("--request-timeout", type=click.FloatRange(min=0.001), default=60.0, show_default=True,
              help="Seconds before a request is answered 504.")
def serve(model_dir, host, port, max_batch_size, max_batch_delay_ms, backend, dtype, max_new_tokens,
          max_body_bytes, request_timeout):
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
                                max_new_tokens_cap=max_new_tokens)
    except MissingBackendError as exc:
        raise MissingDependencyError(str(exc)) from None
    except (HandlerError, ValueError, OSError) as exc:
        raise ConfigError(f"could not load {model_dir!r}: {exc}") from None
    settings = EndpointSettings(max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms,
                                max_body_bytes=max_body_bytes, request_timeout_s=request_timeout)

    def ready(bound_port: int) -> None:
        click.echo(f"serving on http://{host}:{bound_port} (POST /invocations, GET /ping); Ctrl-C to stop", err=True)

    try:
        asyncio.run(serve_forever(service, settings, host=host, port=port, on_ready=ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo("stopped", err=True)
