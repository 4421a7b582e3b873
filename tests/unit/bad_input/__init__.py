"""Bad input, by class: every case is one line naming the problem and exit 1 or 2, never a traceback.

Classes (one module each): unreadable files, non-finite numbers, out-of-range numbers, inconsistent
inputs, hostile paths, config overrides of safety defaults, and edits to the stack file. The cases are
generated from the command tree itself (``leaf_commands``), so a new command or option is covered
without a new test. `serve` and `package` take part in the generated flag cases; their request budgets,
slow clients, signals and output handling are tested over loopback in tests/serve.
"""

from __future__ import annotations

import click
from click.testing import CliRunner, Result

from llmdeploy.cli import options as opt
from llmdeploy.cli.main import cli

SERVING: set[tuple[str, ...]] = set()  # commands left out of the generated cases: none
# Arguments a command needs before it looks at anything else (finetune up requires --ttl).
REQUIRED = {("finetune", "up"): ["--ttl", "6h"]}


def leaf_commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    """(path, command) for every runnable command, e.g. (("finetune", "up"), <Command up>)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name), command


def numeric_options():
    """(path, option, type) for every option parsed by the shared number types, outside serving."""
    for path, command in leaf_commands():
        if path in SERVING:
            continue
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, (opt.Number, opt.Whole)):
                yield path, max(param.opts, key=len), param.type


def invoke(args, **kwargs) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def assert_refused(result: Result, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one ``Error:`` line holding every needle; returns that line."""
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed, f"traceback: {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"want one Error: line, got {len(errors)}:\n{result.output}"
    assert result.exit_code == code, f"exit {result.exit_code}, want {code}:\n{result.output}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]
