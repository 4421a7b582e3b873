"""Options shared by several commands, defined once (pip-tools style).

Precedence for every option: flag > environment variable > user config file
(``llmdeploy config show``) > built-in default. Environment variables are
``LLMDEPLOY_<NAME>``; region also honours AWS's own ``AWS_REGION`` /
``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import json as _json
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from llmdeploy import checks
from llmdeploy.errors import UsageError
from llmdeploy.sizing import DTYPE_BYTES, LOADING_STRATEGIES

DEFAULT_REGION = "us-east-1"
DEFAULT_MODEL = "flan-t5-xl"

region_option = click.option(
    "--region",
    envvar=["LLMDEPLOY_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"],
    default=DEFAULT_REGION,
    show_default=True,
    metavar="REGION",
    help="AWS region whose prices and instances to use.",
)

regions_option = click.option(
    "--region",
    "regions",
    multiple=True,
    metavar="REGION",
    help="Region to act on; repeat for several (default: every catalog region).",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")

stack_option = click.option(
    "--stack",
    envvar="LLMDEPLOY_STACK",
    metavar="NAME",
    help="Pulumi stack name (Pulumi.NAME.yaml at the project root).",
)

# -- numbers: every numeric flag goes through one of these (llmdeploy.checks does the checking) -----------


class _BadNumber(click.BadParameter):
    """click's BadParameter printed as our own one line ("--buffer must be ..."), still exit 2."""

    def format_message(self) -> str:
        return self.message


def envvars(param: click.Parameter) -> list[str]:
    """The environment variables ``param`` reads, in the order click tries them."""
    return [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())


def envvar_used(param: click.Parameter) -> str | None:
    """Which of them gave the value: the first one set and not empty, as click's ``resolve_envvar_value`` picks."""
    return next((e for e in envvars(param) if os.environ.get(e)), None)


def _label(param: click.Parameter | None, ctx: click.Context | None) -> str:
    """The flag's name, and where its value came from when that was not the command line."""
    if param is None:
        return "value"
    name = max(param.opts, key=len) if getattr(param, "opts", None) else (param.human_readable_name or "value")
    source = ctx.get_parameter_source(param.name) if ctx is not None and param.name else None
    if source is ParameterSource.ENVIRONMENT:
        name += f" (from ${envvar_used(param) or 'environment'})"
    elif source is ParameterSource.DEFAULT_MAP:
        name += " (from the user config file)"
    return name


class Number(click.ParamType):
    """A finite float within optional bounds: ``nan``, ``inf``, ``1e400`` and out-of-range values are one line."""

    name = "float"

    def __init__(self, minimum: float | None = None, maximum: float | None = None, above: float | None = None):
        self.minimum, self.maximum, self.above = minimum, maximum, above

    def convert(self, value, param, ctx):
        label = _label(param, ctx)
        try:
            return checks.number(label, checks.parse_float(label, value), minimum=self.minimum, maximum=self.maximum,
                                 above=self.above)
        except UsageError as exc:
            raise _BadNumber(str(exc), ctx=ctx, param=param) from None

    def __repr__(self) -> str:
        return f"Number({self.minimum}, {self.maximum}, above={self.above})"


class Whole(click.ParamType):
    """A whole number within optional bounds; a 5000-digit value is refused by its length, not echoed whole."""

    name = "integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None):
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value, param, ctx):
        label = _label(param, ctx)
        try:
            return checks.number(label, checks.parse_int(label, value), minimum=self.minimum, maximum=self.maximum)
        except UsageError as exc:
            raise _BadNumber(str(exc), ctx=ctx, param=param) from None

    def __repr__(self) -> str:
        return f"Whole({self.minimum}, {self.maximum})"


class Choice(click.Choice):
    """click's Choice, whose refusal also names the closest valid value ("did you mean 'reserved'?")."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            from llmdeploy.errors import did_you_mean

            guess = did_you_mean(str(value), [str(c) for c in self.choices])
            if guess is None:
                raise
            raise click.BadParameter(f"{exc.message.rstrip('.')}. Did you mean {guess!r}?", ctx=ctx, param=param) from None


TOKENS = Whole(1, checks.MAX_TOKENS)
BATCH = Whole(1, checks.MAX_BATCH)


# -- confirmation: from the command line or one named environment variable, never from a config file ----

ASSUME_YES_ENV = "LLMDEPLOY_ASSUME_YES"


def _yes_not_from_a_file(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    # The user config loader already refuses a `yes` key; this keeps the rule whatever fills default_map.
    if value and ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT_MAP:
        raise click.UsageError(f"--yes cannot come from a config file; pass --yes or set {ASSUME_YES_ENV}=1 for one run.")
    return value


yes_option = click.option(
    "--yes", "-y", is_flag=True, envvar=ASSUME_YES_ENV, callback=_yes_not_from_a_file,
    help=f"Do it; without this only show what would happen (or ask). Also ${ASSUME_YES_ENV}=1; never from the config file.",
)


def emit_json(payload: object) -> None:
    """One JSON document on stdout, stable key order, newline-terminated; never NaN or Infinity (not JSON)."""
    sys.stdout.write(_json.dumps(checks.finite_json(payload), indent=2, sort_keys=False, allow_nan=False, default=str) + "\n")


def model_argument(default: str | None = DEFAULT_MODEL):
    return click.argument("model", required=False, default=default, envvar="LLMDEPLOY_MODEL", metavar="[MODEL]")


model_option = click.option(
    "--model",
    envvar="LLMDEPLOY_MODEL",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Bundled model name, Hugging Face Hub id (org/name; needs the 'hub' extra unless bundled), "
         "or a path to a config.json / model folder.",
)

revision_option = click.option(
    "--revision",
    envvar="LLMDEPLOY_REVISION",
    metavar="REV",
    default=None,
    help="Hub branch, tag or commit of the model to size (default: its default branch). "
         "With a bundled model's name, fetches that revision from the Hub instead of the bundled copy.",
)


def echo_hub_notice(notice: str | None) -> None:
    """The one line about where a Hub model came from when not from the Hub itself (offline, unreachable)."""
    if notice:
        click.echo(f"Note: {notice}.", err=True)

dtype_option = click.option(
    "--dtype",
    type=Choice(list(DTYPE_BYTES)),
    envvar="LLMDEPLOY_DTYPE",
    help="Weights dtype (default: the model's own, fp32 for FLAN-T5).",
)

buffer_option = click.option(
    "--buffer",
    type=Number(minimum=0, maximum=4),
    default=None,
    help="Extra GPU memory on top of weights + KV cache, as a fraction (default 0.2 = 20 %).",
)

loading_option = click.option(
    "--loading",
    type=Choice(LOADING_STRATEGIES),
    default=LOADING_STRATEGIES[0],
    show_default=True,
    help="How weights reach the GPU: safetensors then .to(device) (the handler's path: one copy in host RAM), a .bin "
         "state dict read whole (two copies), or shards streamed one at a time.",
)

calibration_option = click.option(
    "--calibration",
    "calibration_files",
    multiple=True,
    # Read by llmdeploy.calibration.load_file through llmdeploy.fileio: a missing file, a folder, a FIFO, text that
    # is not UTF-8 or not JSON, and every bad number are one line there, whichever command passes the path.
    type=click.Path(),
    metavar="FILE",
    help="Speed calibration written by 'llmdeploy calibrate' (overrides the bundled and cached one for its device); repeatable.",
)

catalog_option = click.option(
    "--catalog",
    "catalog_dir",
    type=click.Path(file_okay=False, exists=True),
    envvar="LLMDEPLOY_CATALOG",
    help="Directory of catalog TOML files to use instead of the bundled (or refreshed) one.",
)


# Where stack configs live: `plan --stack` writes there and preview / deploy / destroy read there.
project_dir_option = click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LLMDEPLOY_PROJECT_DIR",
    help="Folder of Pulumi.yaml and Pulumi.NAME.yaml [default: the current folder].",
)


def resolve_project_dir(explicit: Path | None) -> Path:
    return Path(explicit).expanduser().resolve() if explicit is not None else Path.cwd()


# -- what the model server runs: `serve` and `package` (defaults and ranges from handlers/serving_config.py, which
# the handler, the stack settings and `plan` read too) ----------------------------------------------------------------


def serving_option(flag: str, name: str, help_text: str):
    from llmdeploy.handlers import serving_config as sc

    low, high = sc.RANGES[name]
    return click.option(flag, name, type=Whole(low, high), default=getattr(sc, f"DEFAULT_{name.upper()}"),
                        show_default=True, help=help_text)


def serving_options(command):
    """--dtype, --backend, --batching, --max-batch-size, --max-batch-delay-ms and the per-request caps, in that order."""
    from llmdeploy.handlers import serving_config as sc

    for decorator in reversed((
        click.option("--dtype", "dtype", type=Choice(sc.DTYPES), default=sc.DEFAULT_DTYPE,
                     show_default=True,
                     help="Weights dtype; auto = bf16 on compute capability >= 8.0, fp16 (wo in fp32) below, fp32 on CPU."),
        click.option("--backend", type=Choice(sc.BACKENDS), default=sc.DEFAULT_BACKEND, show_default=True,
                     help="transformers (batched as --batching says) or ctranslate2 (static batches always)."),
        # auto is resolved by handlers/serving_config.resolve_batching; its docstring has the H200 measurement.
        click.option("--batching", type=Choice(sc.BATCHING_CHOICES), default=sc.DEFAULT_BATCHING,
                     show_default=True,
                     help="transformers: continuous (iteration-level: requests join the running decode at every "
                          "step) or static (whole batches). auto = static on a GPU, continuous on CPU (measured "
                          "2026-11-30 on an H200: iteration-level served about half the requests/s of static "
                          "batches; on CPU it served more). serve: the device the model loads on. package: the "
                          "tarball is taken to run on a GPU (LMI's GPU images); give continuous for a CPU target "
                          "such as a serverless endpoint. ctranslate2 always runs static batches."),
        serving_option("--max-batch-size", "max_batch_size",
                        "Requests decoded together: the iteration-level decode's slots (DJL option.max_rolling_batch_size) "
                        "or a static batch's size (static batches; DJL batch_size). "
                        "'llmdeploy plan --stack' records the batch it sized capacity with (maxBatchSize)."),
        serving_option("--max-batch-delay-ms", "max_batch_delay_ms",
                        "Longest wait for a static batch to fill after its first request."),
        serving_option("--max-new-tokens", "max_new_tokens", "Cap on max_new_tokens per request."),
        serving_option("--max-num-beams", "max_num_beams", "Cap on num_beams per request."),
        serving_option("--max-request-tokens", "max_request_tokens",
                        "Budget per request: max_new_tokens x num_beams x inputs; more is answered 400."),
    )):
        command = decorator(command)
    return command
