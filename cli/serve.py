"""`llmdeploy serve`: the SageMaker-compatible endpoint on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from llmdeploy.cli.options import Number, Whole, serving_options
from llmdeploy.handlers import serving_config as defaults


@click.command(
    epilog="""\b
Examples:
  llmdeploy serve --model ./flan-t5-small
  llmdeploy serve --model ./flan-t5-small --port 8081 --max-batch-size 64
  llmdeploy serve --model ./flan-t5-small --backend ctranslate2 --max-batch-size 32
  curl -s localhost:8080/invocations -H 'content-type: application/json' \\
       -d '{"inputs": "translate English to German: hello", "parameters": {"max_new_tokens": 32}}'
""",
)
@click.option("--model", "model_dir", required=True, metavar="DIR", help="Model folder (config.json, weights, tokenizer).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=Whole(0, 65535), default=8080, show_default=True)
@serving_options
@click.option("--max-body-bytes", type=Whole(1, 1 << 30), default=defaults.DEFAULT_MAX_BODY_BYTES, show_default=True,
              help="Larger request bodies are answered 413.")
@click.option("--request-timeout", type=Number(above=0, maximum=86_400), default=defaults.DEFAULT_SERVE_REQUEST_TIMEOUT_S,
              show_default=True, help="Seconds before a request is answered 504 (it leaves the decode at the next step).")
@click.option("--header-timeout", type=Number(above=0, maximum=3600), default=defaults.DEFAULT_HEADER_TIMEOUT_S,
              show_default=True, help="Seconds a connection may take to send its request headers (then it is closed).")
@click.option("--body-timeout", type=Number(above=0, maximum=3600), default=defaults.DEFAULT_BODY_TIMEOUT_S,
              show_default=True, help="Seconds a client may take to send its request body (then 408).")
@click.option("--grace-period", type=Number(0, 3600), default=defaults.DEFAULT_GRACE_S, show_default=True,
              help="On SIGTERM/SIGINT: seconds running requests get to finish; the rest are answered 503 and the "
                   "process exits (at the latest 2 s later).")
def serve(model_dir, host, port, batching, dtype, backend, max_batch_size, max_batch_delay_ms, max_new_tokens,
          max_num_beams, max_request_tokens, max_body_bytes, request_timeout, header_timeout, body_timeout,
          grace_period):
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
        from llmdeploy.handlers.endpoint import EndpointSettings, build_service, serve_forever, served_batching
        from llmdeploy.handlers.serving_config import HandlerError, MissingBackendError
    except ImportError as exc:
        raise MissingDependencyError(f"serving needs the 'serve' extra ({exc.name} is missing): "
                                     "pip install 'llmdeploy[serve]'") from None

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"loading {model_dir} ({backend}, dtype {dtype})...", err=True)
    try:
        service = build_service(str(path), backend=backend, dtype=dtype, max_batch_size=max_batch_size,
                                max_batch_delay_ms=max_batch_delay_ms, max_new_tokens_cap=max_new_tokens,
                                max_num_beams=max_num_beams, max_request_tokens=max_request_tokens)
    except MissingBackendError as exc:
        raise MissingDependencyError(str(exc)) from None
    except (HandlerError, ValueError, OSError) as exc:
        raise ConfigError(f"could not load {model_dir!r}: {exc}") from None
    resolved = served_batching(service.engine, batching)
    click.echo(f"batching: {resolved}" + (" (auto: static on a GPU, continuous on CPU)" if batching == "auto" else ""),
               err=True)
    settings = EndpointSettings(max_body_bytes=max_body_bytes, request_timeout_s=request_timeout,
                                grace_s=grace_period, header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                                batching=batching)

    def ready(bound_port: int) -> None:
        click.echo(f"serving on http://{host}:{bound_port} (POST /invocations, GET /ping); Ctrl-C to stop", err=True)

    try:
        asyncio.run(serve_forever(service, settings, host=host, port=port, on_ready=ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo("stopped", err=True)
