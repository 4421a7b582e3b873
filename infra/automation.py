"""The one place llmdeploy drives Pulumi: the Automation API over the ``pulumi`` CLI.

Used by ``llmdeploy deploy/preview/destroy`` and ``llmdeploy finetune up/down``.
The Automation API shells out to the ``pulumi`` CLI, so every entry point first
checks the CLI is on PATH (``pulumi_cli``) and says how to install it.

State lives in ``PULUMI_BACKEND_URL`` when set (an ``s3://bucket/prefix`` for a
team) and otherwise in a local file backend, ``~/.llmdeploy/pulumi-state``.
``pulumi.automation`` is imported inside the functions only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from llmdeploy.errors import CloudError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from pulumi.automation import Stack

DEFAULT_STATE_DIR = Path("~/.llmdeploy/pulumi-state")
INSTALL_HINT = "Install it: curl -fsSL https://get.pulumi.com | sh (or brew install pulumi), then retry."

OnOutput = Callable[[str], Any]


def pulumi_cli() -> str:
    """Path to the ``pulumi`` executable; MissingDependencyError saying how to install it when absent."""
    path = shutil.which("pulumi")
    if path is None:
        raise MissingDependencyError(f"the Pulumi CLI is not installed (no 'pulumi' on PATH). {INSTALL_HINT}")
    return path


def backend_url() -> str:
    """``PULUMI_BACKEND_URL`` if set (e.g. ``s3://team-bucket/llmdeploy``), else the local file backend.

    The local backend folder (``~/.llmdeploy/pulumi-state``) is created on first use.
    """
    url = os.environ.get("PULUMI_BACKEND_URL", "").strip()
    if url:
        return url
    state = DEFAULT_STATE_DIR.expanduser()
    state.mkdir(parents=True, exist_ok=True)
    return f"file://{state}"


def local_state_dir(url: str | None = None) -> Path | None:
    """The folder of a ``file://`` backend (None for S3 and other remote backends); not created here."""
    if url is None:
        url = os.environ.get("PULUMI_BACKEND_URL", "").strip() or f"file://{DEFAULT_STATE_DIR.expanduser()}"
    if not url.startswith("file://"):
        return None
    return Path(url[len("file://") :]).expanduser()


def _env_vars(url: str) -> dict[str, str]:
    env = {"PULUMI_BACKEND_URL": url, "PULUMI_SKIP_UPDATE_CHECK": "true"}
    if "PULUMI_CONFIG_PASSPHRASE" not in os.environ and "PULUMI_CONFIG_PASSPHRASE_FILE" not in os.environ:
        # Stacks here hold no secrets of their own; an empty passphrase keeps the
        # passphrase secrets provider from prompting. Set either variable to use a real one.
        env["PULUMI_CONFIG_PASSPHRASE"] = ""
    return env


@overload
def select_stack(
    stack_name: str,
    *,
    project_name: str,
    program: Callable[[], None] | None = None,
    work_dir: str | os.PathLike | None = None,
    config: Mapping[str, str] | None = None,
    create: Literal[True] = True,
) -> Stack: ...


@overload
def select_stack(
    stack_name: str,
    *,
    project_name: str,
    program: Callable[[], None] | None = None,
    work_dir: str | os.PathLike | None = None,
    config: Mapping[str, str] | None = None,
    create: bool,
) -> Stack | None: ...


def select_stack(
    stack_name: str,
    *,
    project_name: str,
    program: Callable[[], None] | None = None,
    work_dir: str | os.PathLike | None = None,
    config: Mapping[str, str] | None = None,
    create: bool = True,
) -> Stack | None:
    """Select ``stack_name`` of ``project_name`` (creating it when ``create``) and set its ``config``.

    With ``create=False`` a stack that does not exist yet is None, and nothing is written to the
    backend: ``llmdeploy deploy`` creates the stack only once the user said yes.

    With ``program`` the stack runs that inline program (in this process); else
    the Pulumi project at ``work_dir``. The backend is ``backend_url()``, set on
    the workspace through ``LocalWorkspaceOptions(project_settings=..., env_vars=...)``.

    Secrets: when neither ``PULUMI_CONFIG_PASSPHRASE`` nor
    ``PULUMI_CONFIG_PASSPHRASE_FILE`` is set, ``PULUMI_CONFIG_PASSPHRASE`` is set
    to ``""`` for the Pulumi commands (the passphrase provider would otherwise
    prompt); set one of them to encrypt stack secrets with a real passphrase.
    """
    pulumi_cli()
    if program is None and work_dir is None:
        raise ValueError("select_stack needs an inline program or a work_dir")
    try:
        from pulumi import automation as auto
    except ImportError:  # pragma: no cover - pulumi ships with the infra extra
        raise MissingDependencyError("the pulumi Python SDK is not installed.", hint="pip install 'llmdeploy[infra]'.") from None

    url = backend_url()
    settings = auto.ProjectSettings(name=project_name, runtime="python", backend=auto.ProjectBackend(url=url))
    opts = auto.LocalWorkspaceOptions(project_settings=settings, env_vars=_env_vars(url))
    if program is None:
        opts.project_settings = None  # a work_dir project has its own Pulumi.yaml
    where = dict(stack_name=stack_name, project_name=project_name, program=program) if program is not None else \
        dict(stack_name=stack_name, work_dir=str(work_dir))
    try:
        if create:
            stack = auto.create_or_select_stack(**where, opts=opts)
        else:
            try:
                stack = auto.select_stack(**where, opts=opts)
            except auto.StackNotFoundError:
                return None
        for key, value in (config or {}).items():
            stack.set_config(key, auto.ConfigValue(value=str(value)))
    except auto.CommandError as exc:
        raise CloudError(f"could not select Pulumi stack {stack_name!r}: {_last_line(exc)}") from None
    return stack


def outputs(stack: Stack) -> dict[str, object]:
    """The stack's current outputs as plain values (empty before its first ``up``)."""
    from pulumi import automation as auto

    try:
        return {key: out.value for key, out in stack.outputs().items()}
    except auto.CommandError as exc:
        raise CloudError(f"could not read the outputs of Pulumi stack {stack.name!r}: {_last_line(exc)}") from None


def up(stack: Stack, on_output: OnOutput | None = None) -> dict[str, object]:
    """``pulumi up``; the stack outputs as plain values."""
    from pulumi import automation as auto

    try:
        result = stack.up(on_output=on_output)
    except auto.CommandError as exc:
        raise CloudError(f"pulumi up of stack {stack.name!r} failed: {_last_line(exc)}") from None
    return {key: out.value for key, out in result.outputs.items()}


def preview(stack: Stack, on_output: OnOutput | None = None):
    """``pulumi preview``; returns the Automation API's PreviewResult (``change_summary``)."""
    from pulumi import automation as auto

    try:
        return stack.preview(on_output=on_output)
    except auto.CommandError as exc:
        raise CloudError(f"pulumi preview of stack {stack.name!r} failed: {_last_line(exc)}") from None


def destroy(stack: Stack, on_output: OnOutput | None = None, remove: bool = False):
    """``pulumi destroy``; with ``remove`` the stack and its config are deleted afterwards."""
    from pulumi import automation as auto

    try:
        return stack.destroy(on_output=on_output, remove=remove)
    except auto.CommandError as exc:
        raise CloudError(f"pulumi destroy of stack {stack.name!r} failed: {_last_line(exc)}") from None


def _last_line(exc: BaseException) -> str:
    """The most telling line of a CommandError (its stderr's last non-empty line)."""
    stderr = getattr(exc, "stderr", "") or str(exc)
    lines = [ln.strip() for ln in str(stderr).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
