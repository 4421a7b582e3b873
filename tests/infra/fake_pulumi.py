"""A stand-in for the Pulumi CLI behind the Automation API (this machine has no Pulumi CLI and no AWS).

``FakeBackend.install()`` replaces the two ``pulumi.automation`` entry points llmdeploy.infra.automation
calls, ``create_or_select_stack`` and ``select_stack``, keeping their keyword signatures, and puts a
``pulumi`` executable on PATH so that ``automation.pulumi_cli()`` finds one (it exits 1 if anything
ever runs it: every Pulumi command must go through the fake). What it mirrors of the real thing
(pulumi/automation/_local_workspace.py and _stack.py in the installed SDK):

- ``select_stack`` raises the SDK's own ``StackNotFoundError`` for a stack the backend lacks
  (the CLI's "no stack named 'dev' found"); ``create_or_select_stack`` adds it to the backend;
- ``FakeStack`` has the methods llmdeploy uses, with the SDK's result classes: ``set_config``,
  ``preview`` -> ``PreviewResult(change_summary)``, ``up`` -> ``UpResult(outputs={k: OutputValue})``,
  ``outputs`` -> ``{k: OutputValue}``, ``destroy`` -> ``DestroyResult``;
- ``up`` and ``preview`` run the real program (infra/__main__.py) under Pulumi's mocks with the
  stack's config (set_config for inline programs, ``Pulumi.<stack>.yaml`` for a project folder),
  so the outputs are the ones the program exports; a program error becomes the SDK's
  ``CommandError`` whose stderr ends with the error, as ``pulumi up`` reports it.

Every call is recorded in ``calls`` and, with ``log``, appended to a JSON-lines file (for a CLI run
in a subprocess under a pseudo-terminal).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult

FAKE_CLI = "#!/bin/sh\necho 'fake pulumi: the tests route every Pulumi command through tests/infra/fake_pulumi.py' >&2\nexit 1\n"


class FakeBackend:
    def __init__(self, bin_dir: Path, *, stacks: dict[str, dict] | None = None, log: Path | None = None):
        self.bin_dir = Path(bin_dir)
        self.stacks: dict[str, dict] = dict(stacks or {})  # name -> last outputs (plain values)
        self.calls: list[tuple] = []
        self.log = log

    # -- installing ------------------------------------------------------------------------------------

    def install(self, monkeypatch=None) -> None:
        """Route the Automation API here; with pytest's ``monkeypatch`` everything is undone after the test."""
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        cli = self.bin_dir / "pulumi"
        cli.write_text(FAKE_CLI)
        cli.chmod(cli.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        path = f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        if monkeypatch is None:
            os.environ["PATH"] = path
            auto.create_or_select_stack, auto.select_stack = self.create_or_select_stack, self.select_stack
        else:
            monkeypatch.setenv("PATH", path)
            monkeypatch.setattr(auto, "create_or_select_stack", self.create_or_select_stack)
            monkeypatch.setattr(auto, "select_stack", self.select_stack)

    def record(self, *call) -> None:
        self.calls.append(call)
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(json.dumps(call, default=str) + "\n")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    # -- pulumi.automation -----------------------------------------------------------------------------

    def create_or_select_stack(self, stack_name, project_name=None, program=None, work_dir=None, opts=None):
        self.record("create_or_select_stack", stack_name)
        self.stacks.setdefault(stack_name, {})
        return FakeStack(self, stack_name, work_dir)

    def select_stack(self, stack_name, project_name=None, program=None, work_dir=None, opts=None):
        self.record("select_stack", stack_name)
        if stack_name not in self.stacks:
            raise auto.StackNotFoundError(CommandResult("", f"error: no stack named '{stack_name}' found", 255))
        return FakeStack(self, stack_name, work_dir)


class FakeStack:
    def __init__(self, backend: FakeBackend, name: str, work_dir):
        self.backend, self.name, self.work_dir = backend, name, work_dir
        self.config: dict[str, str] = {}

    def set_config(self, key: str, value: auto.ConfigValue) -> None:
        self.config[key] = value.value

    def _values(self) -> dict[str, str]:
        if self.work_dir is None:
            return dict(self.config)
        import yaml

        data = yaml.safe_load((Path(self.work_dir) / f"Pulumi.{self.name}.yaml").read_text())
        return {k: str(v) for k, v in data["config"].items()}

    def _run_program(self):
        from llmdeploy.errors import LlmdeployError
        from llmdeploy.infra.offline_preview import run_program

        try:
            return run_program(self._values(), stack=self.name)
        except LlmdeployError as exc:
            raise auto.CommandError(CommandResult("", f"error: {exc}", 255)) from None

    def preview(self, on_output=None, **_):
        self.backend.record("preview", self.name)
        mocks = self._run_program()
        if on_output:
            on_output(f"Previewing update ({self.name}):\n")
            on_output(f"Resources:\n    {sum(r.custom for r in mocks.resources)} unchanged\n")
        return auto.PreviewResult("", "", {"same": sum(r.custom for r in mocks.resources)})

    def up(self, on_output=None, **_):
        self.backend.record("up", self.name)
        mocks = self._run_program()
        if on_output:
            on_output(f"Updating ({self.name}):\n")
        self.backend.stacks[self.name] = dict(mocks.outputs)
        return auto.UpResult("", "", None, {k: auto.OutputValue(v, False) for k, v in mocks.outputs.items()})

    def outputs(self):
        self.backend.record("outputs", self.name)
        return {k: auto.OutputValue(v, False) for k, v in self.backend.stacks.get(self.name, {}).items()}

    def destroy(self, on_output=None, remove=False, **_):
        self.backend.record("destroy", self.name, remove)
        if on_output:
            on_output(f"Destroying ({self.name}):\n")
        self.backend.stacks[self.name] = {}
        if remove:
            del self.backend.stacks[self.name]
        return auto.DestroyResult("", "", None)
