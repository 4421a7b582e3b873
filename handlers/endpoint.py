"""A SageMaker-compatible HTTP endpoint (``GET /ping``, ``POST /invocations``) on aiohttp.

The batcher sits in front of the same service the DJL handler uses: iteration-level
(``ContinuousBatcher``, for engines with a decode loop) or static (``DynamicBatcher``:
CTranslate2, or ``--batching static``). ``--batching auto`` (the default) picks static when
the model is on a CUDA device and iteration-level on CPU (serving_config.resolve_batching
says why: measured on an H200, iteration-level served about half the requests/s). Runs without the rest of
llmdeploy (stdlib + aiohttp + torch + transformers), e.g. on a self-hosted instance:
``python endpoint.py --model /opt/ml/model --port 8080``.

No request, slow client or signal can keep the server from answering others or stopping:

- bad input -> 400 with ``{"error": ...}`` (JSON, fields, parameters, the per-request budget
  ``max_new_tokens x num_beams x texts`` and the ``num_beams`` cap); body over the limit -> 413;
- a client must send its request headers within ``header_timeout_s`` (aiohttp's keep-alive timer,
  armed from the connection's start since aiohttp 3.14.4; the connection is closed) and its body
  within ``body_timeout_s`` (408, connection closed);
- no answer within ``request_timeout_s`` -> 504, and the request leaves the decode at its next step,
  as does a request whose client disconnected (aiohttp cancels its handler: handler_cancellation);
- SIGTERM/SIGINT: new requests get 503, running ones get until ``grace_s`` to finish, the rest
  are answered 503, and the process exits; a watchdog ends it at ``grace_s + 2`` s whatever is stuck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from aiohttp import web

try:
    from . import serving_config as defaults
    from .batching import BatcherClosed, ContinuousBatcher, DynamicBatcher
    from .lmi_service import Seq2SeqService
    from .serving_config import (
        BACKENDS,
        BATCHING_CHOICES,
        RequestError,
        batch_properties,
        format_result,
        parse_request,
        resolve_batching,
    )
except ImportError:  # run as a flat file on a self-hosted instance
    import serving_config as defaults  # type: ignore[no-redef]
    from batching import BatcherClosed, ContinuousBatcher, DynamicBatcher  # type: ignore[no-redef]
    from lmi_service import Seq2SeqService  # type: ignore[no-redef]
    from serving_config import (  # type: ignore[no-redef]
        BACKENDS,
        BATCHING_CHOICES,
        RequestError,
        batch_properties,
        format_result,
        parse_request,
        resolve_batching,
    )

log = logging.getLogger("llmdeploy.handlers.endpoint")


class EndpointState(TypedDict):
    draining: bool  # SIGTERM seen: new requests are refused
    in_flight: int  # requests inside invocations()


@dataclass(frozen=True)
class EndpointSettings:
    """The HTTP server's own settings. What the model serves (batch size and delay, token caps) is the service's
    ServingConfig, the same one DJL's serving.properties give the handler (build_service)."""

    max_body_bytes: int = defaults.DEFAULT_MAX_BODY_BYTES
    request_timeout_s: float = defaults.DEFAULT_SERVE_REQUEST_TIMEOUT_S
    grace_s: float = defaults.DEFAULT_GRACE_S  # SIGTERM: how long running requests may take before they are answered 503
    header_timeout_s: float = defaults.DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = defaults.DEFAULT_BODY_TIMEOUT_S
    batching: str = defaults.DEFAULT_BATCHING  # auto | continuous | static (served_batching resolves auto)

    @property
    def shutdown_timeout_s(self) -> float:  # the name EndpointServer.stop() callers used
        return self.grace_s


SERVICE_KEY = web.AppKey("service", Seq2SeqService)
BATCHER_KEY = web.AppKey[DynamicBatcher | ContinuousBatcher]("batcher")
SETTINGS_KEY = web.AppKey("settings", EndpointSettings)
STATE_KEY = web.AppKey[EndpointState]("state")


def _error(status: int, message: str, *, close: bool = False) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    if close:
        response.force_close()
    return response


def _run_batch(service: Seq2SeqService, requests: list, cancelled: Callable[[int], bool] | None = None) -> list:
    """Runs in the static batcher's worker thread: one result (or exception) per parsed request."""
    results = service.predict(requests, cancelled=cancelled)
    return [r if isinstance(r, BaseException) else format_result(req, r) for req, r in zip(requests, results, strict=True)]


def served_batching(engine, batching: str) -> str:
    """``continuous`` or ``static``: ``batching`` resolved for the device ``engine`` loaded the model on (auto =
    static on CUDA, continuous on CPU; an engine that names no device counts as CPU)."""
    kind = getattr(getattr(engine, "device", None), "kind", "cpu")
    return resolve_batching(batching, on_gpu=kind == "cuda")


def make_batcher(service: Seq2SeqService, settings: EndpointSettings) -> DynamicBatcher | ContinuousBatcher:
    """The iteration-level batcher when the engine has a decode loop and settings ask for it (auto: on CPU), else
    static; either way ``service.config.max_batch_size`` requests at most are decoded together."""
    engine, config = service.engine, service.initialized_config()
    batching = served_batching(engine, settings.batching)
    if settings.batching == defaults.BATCHING_AUTO:
        log.info("batching auto: %s (model on %s)", batching, getattr(getattr(engine, "device", None), "kind", "cpu"))
    if batching == "continuous" and getattr(engine, "decode_loop", None) is not None:
        try:
            return ContinuousBatcher(engine, max_slots=config.max_batch_size,
                                     format_result=format_result, request_timeout_s=settings.request_timeout_s)
        except ValueError as exc:  # not a T5: static batches
            log.info("%s; using static batches", exc)
    return DynamicBatcher(lambda reqs, cancelled: _run_batch(service, reqs, cancelled),
                          max_batch_size=config.max_batch_size, max_delay_s=config.max_batch_delay_ms / 1000.0)


async def ping(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    if request.app[STATE_KEY]["draining"]:
        return _error(503, "shutting down")
    if not service.ready:
        return _error(503, "model not loaded")
    return web.json_response({"status": "healthy"})


async def invocations(request: web.Request) -> web.Response:
    app = request.app
    state = app[STATE_KEY]
    if state["draining"]:
        return _error(503, "server is shutting down; not accepting new requests", close=True)
    settings: EndpointSettings = app[SETTINGS_KEY]
    service = app[SERVICE_KEY]
    if not service.ready:
        return _error(503, "model not loaded")
    state["in_flight"] += 1
    try:
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            return _error(413, f"request body of {request.content_length} bytes exceeds the limit of "
                               f"{settings.max_body_bytes} bytes", close=True)
        try:
            raw = await asyncio.wait_for(request.read(), settings.body_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body exceeds the limit of {settings.max_body_bytes} bytes", close=True)
        except TimeoutError:
            return _error(408, f"request body not received within {settings.body_timeout_s:g} s", close=True)
        content_type = (request.content_type or "").lower()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "request body is not UTF-8")
        if content_type.startswith("text/"):
            body = {"inputs": text}
        else:
            try:
                body = json.loads(text)
            except json.JSONDecodeError as exc:
                return _error(400, f"request body is not valid JSON: {exc.msg} at position {exc.pos}")
        try:
            parsed = parse_request(body, service.initialized_config())
        except RequestError as exc:
            return _error(exc.code, exc.message)
        try:
            result = await asyncio.wait_for(app[BATCHER_KEY].submit(parsed), settings.request_timeout_s)
        except TimeoutError:
            return _error(504, f"no answer within {settings.request_timeout_s:g} s")
        except BatcherClosed as exc:
            return _error(503, str(exc), close=True)
        except RequestError as exc:
            return _error(exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - one request failed; keep serving
            code = getattr(exc, "code", 500)
            code = code if isinstance(code, int) and 400 <= code < 600 else 500
            log.warning("request failed: %s", exc)
            return _error(code, str(getattr(exc, "message", None) or exc))
        return web.json_response(result)
    finally:
        state["in_flight"] -= 1


def create_app(service: Seq2SeqService, settings: EndpointSettings | None = None) -> web.Application:
    settings = settings or EndpointSettings()
    # client_max_size makes aiohttp refuse larger bodies while reading (chunked uploads too).
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SERVICE_KEY] = service
    app[SETTINGS_KEY] = settings
    app[STATE_KEY] = EndpointState(draining=False, in_flight=0)
    app[BATCHER_KEY] = make_batcher(service, settings)
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations)

    async def _start(app_):
        await app_[BATCHER_KEY].start()

    async def _stop(app_):
        await app_[BATCHER_KEY].close(drain_timeout_s=0)

    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


def make_runner(app: web.Application, settings: EndpointSettings) -> web.AppRunner:
    """The runner with the slow-client defences: header timeout (keep-alive timer), handler cancellation."""
    return web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                         keepalive_timeout=settings.header_timeout_s,
                         # after an early answer (408, 413) aiohttp reads what is left of the body for at most
                         # this long (default 10 s) before closing: a stalled upload holds nothing longer
                         lingering_time=1.0,
                         shutdown_timeout=1.0)  # after the drain, what is still open (stalled uploads) is cut


async def drain(app: web.Application, timeout_s: float) -> None:
    """Refuse new requests; running ones get until ``timeout_s`` to finish, then the rest are answered 503."""
    app[STATE_KEY]["draining"] = True
    deadline = time.monotonic() + timeout_s
    await app[BATCHER_KEY].close(drain_timeout_s=max(0.0, timeout_s - 1.0))
    while app[STATE_KEY]["in_flight"] and time.monotonic() < deadline:  # handlers writing their answers
        await asyncio.sleep(0.02)


class EndpointServer:
    """Runs the app on its own event loop in a background thread (tests, benchmark).

    ``start()`` returns once the port is bound; ``stop()`` drains then closes.
    """

    def __init__(self, service: Seq2SeqService, settings: EndpointSettings | None = None, *, host: str = "127.0.0.1",
                 port: int = 0):
        self.service = service
        self.settings = settings or EndpointSettings()
        self.host = host
        self.port = port
        self.app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def batcher(self) -> DynamicBatcher | ContinuousBatcher:
        if self.app is None:
            raise RuntimeError("the endpoint is not started: call start() first")
        return self.app[BATCHER_KEY]

    async def _astart(self) -> None:
        self.app = create_app(self.service, self.settings)
        self._runner = make_runner(self.app, self.settings)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _astop(self) -> None:
        if self.app is None or self._runner is None:  # _astart failed: nothing to drain
            return
        await drain(self.app, self.settings.grace_s)
        await self._runner.cleanup()

    def start(self, timeout_s: float = 30.0) -> EndpointServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._astart())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._astop())
            self._loop.close()
            self._stopped.set()

        self._thread = threading.Thread(target=run, name="llmdeploy-endpoint", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise RuntimeError("endpoint did not start in time")
        if errors:
            raise errors[0]
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _hard_exit_after(seconds: float) -> threading.Timer:
    """A daemon timer that ends the process if the orderly shutdown is stuck (a model call that never returns)."""

    def kill() -> None:
        log.error("shutdown did not finish within the grace period; exiting now")
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    return timer


async def serve_forever(service: Seq2SeqService, settings: EndpointSettings, *, host: str, port: int,
                        on_ready: Callable[[int], object] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; then refuse new requests, finish running ones within ``grace_s``, answer the
    rest 503 and return. The process is ended at ``grace_s + 2`` s after the signal whatever is left running."""
    app = create_app(service, settings)
    runner = make_runner(app, settings)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread / Windows
            loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(runner.addresses[0][1])
    await stop.wait()
    watchdog = _hard_exit_after(settings.grace_s + 2.0)
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second Ctrl-C interrupts the drain
        with contextlib.suppress(NotImplementedError, RuntimeError):  # pragma: no cover
            loop.remove_signal_handler(sig)
    log.info("signal received: refusing new requests, finishing %d in flight within %g s",
             app[STATE_KEY]["in_flight"], settings.grace_s)
    await drain(app, settings.grace_s)
    await runner.cleanup()
    watchdog.cancel()


def build_service(model: str, *, backend: str = defaults.DEFAULT_BACKEND, dtype: str = defaults.DEFAULT_DTYPE,
                  max_batch_size: int = defaults.DEFAULT_MAX_BATCH_SIZE,
                  max_batch_delay_ms: int = defaults.DEFAULT_MAX_BATCH_DELAY_MS,
                  max_new_tokens_cap: int = defaults.DEFAULT_MAX_NEW_TOKENS, device: str = "auto",
                  max_input_tokens: int | None = None, ct2_dir: str | None = None,
                  max_num_beams: int = defaults.DEFAULT_MAX_NUM_BEAMS,
                  max_request_tokens: int = defaults.DEFAULT_MAX_REQUEST_TOKENS) -> Seq2SeqService:
    """A loaded Seq2SeqService for a local model folder (what ``llmdeploy serve`` runs), configured through the
    same serving.properties keys `llmdeploy package` writes for DJL (the static form: the endpoint picks its
    batcher itself, make_batcher)."""
    try:
        from .seq2seq import load_engine
    except ImportError:
        from seq2seq import load_engine  # type: ignore[no-redef]

    props = {"option.model_id": model, "option.backend": backend, "option.dtype": dtype,
             "option.max_new_tokens": str(max_new_tokens_cap), "option.device": device,
             "option.max_num_beams": str(max_num_beams), "option.max_request_tokens": str(max_request_tokens),
             **dict(batch_properties(max_batch_size, rolling=False, max_batch_delay_ms=max_batch_delay_ms))}
    if max_input_tokens:
        props["option.max_input_tokens"] = str(max_input_tokens)
    service = Seq2SeqService(engine_loader=lambda cfg: load_engine(cfg, ct2_dir=ct2_dir))
    service.initialize(props)
    return service


def main(argv=None) -> None:  # pragma: no cover - thin wrapper for self-hosted use
    parser = argparse.ArgumentParser(description="SageMaker-compatible seq2seq endpoint")
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--batching", choices=BATCHING_CHOICES, default=defaults.DEFAULT_BATCHING,
                        help="auto = static on CUDA, continuous (iteration-level) on CPU")
    parser.add_argument("--max-batch-size", type=int, default=defaults.DEFAULT_MAX_BATCH_SIZE,
                        help="requests decoded together (continuous: decode slots; static: batch size)")
    parser.add_argument("--max-batch-delay-ms", type=int, default=defaults.DEFAULT_MAX_BATCH_DELAY_MS)
    parser.add_argument("--backend", choices=BACKENDS, default=defaults.DEFAULT_BACKEND)
    parser.add_argument("--dtype", default=defaults.DEFAULT_DTYPE)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--request-timeout", type=float, default=defaults.DEFAULT_SERVE_REQUEST_TIMEOUT_S)
    parser.add_argument("--grace-period", type=float, default=defaults.DEFAULT_GRACE_S)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.DEFAULT_MAX_NEW_TOKENS,
                        help="cap on max_new_tokens per request")
    parser.add_argument("--max-request-tokens", type=int, default=defaults.DEFAULT_MAX_REQUEST_TOKENS)
    parser.add_argument("--max-num-beams", type=int, default=defaults.DEFAULT_MAX_NUM_BEAMS)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--ct2-dir", default=None, help="converted CTranslate2 model folder (cache)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = build_service(args.model, backend=args.backend, dtype=args.dtype, max_batch_size=args.max_batch_size,
                            max_batch_delay_ms=args.max_batch_delay_ms, max_new_tokens_cap=args.max_new_tokens,
                            device=args.device, ct2_dir=args.ct2_dir, max_num_beams=args.max_num_beams,
                            max_request_tokens=args.max_request_tokens)
    settings = EndpointSettings(max_body_bytes=args.max_body_bytes, request_timeout_s=args.request_timeout,
                                grace_s=args.grace_period, batching=args.batching)
    asyncio.run(serve_forever(service, settings, host=args.host, port=args.port,
                              on_ready=lambda p: print(f"listening on http://{args.host}:{p}", flush=True)))


if __name__ == "__main__":  # pragma: no cover
    main()
