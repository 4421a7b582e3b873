"""Options shared by several commands, defined once (pip-tools style).

Precedence for every option: flag > environment variable > user config file
(``llmdeploy config show``) > built-in default. Environment variables are
``LLMDEPLOY_<NAME>``; region also honours AWS's own ``AWS_REGION`` /
``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import json as _json
import sys
from pathlib import Path

import click

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

yes_option = click.option("--yes", "-y", is_flag=True, help="Do it; without this only show what would happen.")


def emit_json(payload: object) -> None:
    """One JSON document on stdout, stable key order, newline-terminated."""
    sys.stdout.write(_json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def model_argument(default: str | None = DEFAULT_MODEL):
    return click.argument("model", required=False, default=default, envvar="LLMDEPLOY_MODEL", metavar="[MODEL]")


model_option = click.option(
    "--model",
    envvar="LLMDEPLOY_MODEL",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Bundled model name, Hugging Face id of a bundled model, or a path to a config.json / model folder.",
)

dtype_option = click.option(
    "--dtype",
    type=click.Choice(list(DTYPE_BYTES)),
    envvar="LLMDEPLOY_DTYPE",
    help="Weights dtype (default: the model's own, fp32 for FLAN-T5).",
)

buffer_option = click.option(
    "--buffer",
    type=click.FloatRange(min=0, max=4),
    default=None,
    help="Extra GPU memory on top of weights + KV cache, as a fraction (default 0.2 = 20 %).",
)

loading_option = click.option(
    "--loading",
    type=click.Choice(LOADING_STRATEGIES),
    default=LOADING_STRATEGIES[0],
    show_default=True,
    help="How weights reach the GPU: safetensors then .to(device) (the handler's path: one copy in host RAM), a .bin "
         "state dict read whole (two copies), or shards streamed one at a time.",
)

calibration_option = click.option(
    "--calibration",
    "calibration_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
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
