"""Any model on the Hugging Face Hub, sized from small metadata files, never its weights.

For ``org/name`` (and an optional revision) three things are read:

- the model info, ``GET /api/models/{id}`` (``/revision/{rev}`` when one is asked
  for) through ``HfApi.model_info``: the commit, whether the repo is gated, its
  file list and ``safetensors.parameters``, the parameter count per dtype as the
  Hub computed it from the checkpoint's headers;
- ``config.json`` through ``hf_hub_download``;
- ``model.safetensors.index.json`` when the file list has one: its
  ``metadata.total_size`` is the exact size of the weights as stored.

``huggingface_hub`` (the ``hub`` extra) does the HTTP, so ``HF_ENDPOINT``,
``HF_TOKEN`` (or ``hf auth login``), ``HF_HUB_OFFLINE`` and its cache
(``HF_HOME`` / ``HF_HUB_CACHE``) work as everywhere else. The model info is not
part of that cache, so the figures taken from it are kept beside it under the
user cache (``hub/<org>/<name>/<commit>.json``): offline, or with the Hub
unreachable, the cached copy gives the same numbers as the last online run.

Everything a user must act on is one ``LlmdeployError`` line: gated (and how to
pass a token), not found (with the Hub's own answer and a did-you-mean over the
bundled models), a revision that does not exist, offline with nothing cached.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any, Literal, overload

from llmdeploy.errors import CloudError, ConfigError, MissingDependencyError, UsageError, did_you_mean
from llmdeploy.models import HubRecord

INDEX_FILE = "model.safetensors.index.json"
# org/name as the Hub spells repo ids (huggingface_hub's validate_repo_id is stricter; it has the last word).
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_TOKEN_HINT = "export HF_TOKEN=hf_... (a read token from https://huggingface.co/settings/tokens) or run 'hf auth login'"


class HubError(CloudError):
    """The Hub answered, and what it said needs the user (gated, private, a missing file)."""


def looks_like_hub_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and ".." not in text


def resolve(repo_id: str, *, revision: str | None = None) -> tuple[dict[str, Any], HubRecord]:
    """``(config.json as a dict, what the Hub says about the checkpoint)`` for ``repo_id`` at ``revision``."""
    try:
        import huggingface_hub  # noqa: F401
    except ModuleNotFoundError:
        raise MissingDependencyError(
            f"{repo_id!r} is a Hugging Face Hub id; fetching its config needs huggingface_hub, which is not installed.",
            hint="Install the extra: pip install 'llmdeploy[hub]' (bundled names and local config.json files work without it).",
        ) from None
    with _quiet():
        return _resolve(repo_id, revision)


@contextlib.contextmanager
def _quiet():
    """No progress bars or retry chatter from huggingface_hub: the user gets our one line instead."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    bars_were_off = are_progress_bars_disabled()
    verbosity = hf_logging.get_verbosity()
    disable_progress_bars()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if not bars_were_off:
            enable_progress_bars()


def _resolve(repo_id: str, revision: str | None) -> tuple[dict[str, Any], HubRecord]:
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub import errors as hf

    endpoint = constants.ENDPOINT
    info = None
    why_offline = None  # set when the Hub is not used: the cache must do
    if constants.is_offline_mode():
        why_offline = "HF_HUB_OFFLINE is set"
    else:
        try:
            info = HfApi().model_info(repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except hf.HFValidationError as exc:
            raise UsageError(f"{repo_id!r} is not a valid Hugging Face Hub id: {_first_line(exc)}") from None
        except (httpx2.TransportError, hf.OfflineModeIsEnabled) as exc:
            why_offline = f"the Hub at {endpoint} is unreachable ({_first_line(exc)})"
        except hf.HfHubHTTPError as exc:
            _raise_for(exc, repo_id, revision, endpoint)
            status = exc.response.status_code if exc.response is not None else "?"
            why_offline = f"the Hub at {endpoint} answered HTTP {status}"
    offline = why_offline is not None
    notice = f"{why_offline}: using the cached copy of {repo_id}" if offline else None

    config_path = _download(repo_id, "config.json", revision, why_offline=why_offline, endpoint=endpoint, required=True)
    commit = _commit_of(config_path, revision)
    config = _read_json(config_path, f"config.json of {repo_id}")

    has_index = info is None or any(s.rfilename == INDEX_FILE for s in (info.siblings or ()))
    weights_bytes = None
    if has_index:
        index_path = _download(repo_id, INDEX_FILE, commit or revision, why_offline=why_offline, endpoint=endpoint, required=False)
        if index_path is not None:
            total = _read_json(index_path, f"{INDEX_FILE} of {repo_id}").get("metadata", {}).get("total_size")
            weights_bytes = int(total) if isinstance(total, (int, float)) and total > 0 else None

    facts_path = _facts_path(repo_id, commit)
    facts: dict[str, Any]  # what the Hub said, or its cached copy from an earlier online run
    if info is not None:
        by_dtype = dict(info.safetensors.parameters) if info.safetensors else {}
        facts = {"repo_id": repo_id, "commit": commit, "parameters": by_dtype,
                 "total": info.safetensors.total if info.safetensors else None, "gated": info.gated or None}
        _write_facts(facts_path, facts)
        source = f"from the Hub at {endpoint}"
    else:
        facts = _read_facts(facts_path) or {}
        source = "from the local Hugging Face cache"
    by_dtype = {str(k): int(v) for k, v in (facts.get("parameters") or {}).items()}
    total = facts.get("total") or (sum(by_dtype.values()) if by_dtype else None)
    gated = facts.get("gated")
    record = HubRecord(
        repo_id=repo_id, revision=revision, commit=commit, parameters_by_dtype=tuple(sorted(by_dtype.items())),
        parameters_total=int(total) if total else None, weights_bytes=weights_bytes,
        gated=str(gated) if gated else None, source=source,
        notice=notice,
    )
    return config, record


@overload
def _download(repo_id: str, filename: str, revision: str | None, *, why_offline: str | None, endpoint: str,
              required: Literal[True]) -> Path: ...
@overload
def _download(repo_id: str, filename: str, revision: str | None, *, why_offline: str | None, endpoint: str,
              required: bool) -> Path | None: ...
def _download(repo_id: str, filename: str, revision: str | None, *, why_offline: str | None, endpoint: str,
              required: bool) -> Path | None:
    """The cached path of one file of the repo; None only when it is absent and not ``required`` (else one line)."""
    import httpx2
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub import errors as hf

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=why_offline is not None))
    except hf.HFValidationError as exc:
        raise UsageError(f"{repo_id!r} is not a valid Hugging Face Hub id: {_first_line(exc)}") from None
    except hf.LocalEntryNotFoundError:
        if not required:
            return None
        where = f"{repo_id}@{revision}" if revision else repo_id
        if why_offline:
            raise HubError(
                f"{why_offline}, and {where} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}).",
                hint="Run the same command once online to cache its config, or point at a local config.json.",
            ) from None
        raise HubError(f"cannot fetch {filename} of {where} from {endpoint} and there is no cached copy.",
                       hint="Check the connection (and HF_ENDPOINT), then retry.") from None
    except hf.RemoteEntryNotFoundError:
        if not required:
            return None
        raise ConfigError(
            f"{repo_id} has no {filename} on the Hub, so its architecture cannot be read "
            "(a GGUF-only or non-transformers repo?).",
            hint="Size the original transformers checkpoint instead, or pass a local config.json.",
        ) from None
    except hf.HfHubHTTPError as exc:
        _raise_for(exc, repo_id, revision, endpoint)
        raise HubError(f"the Hub at {endpoint} refused {filename} of {repo_id}: {_first_line(exc)}") from None
    except httpx2.TransportError as exc:
        raise HubError(f"the Hub at {endpoint} is unreachable ({_first_line(exc)}) and {repo_id} is not cached.") from None


def _raise_for(exc, repo_id: str, revision: str | None, endpoint: str) -> None:
    """Turn the Hub's gated / not-found / bad-revision answers into one line each; return for anything else."""
    from huggingface_hub import errors as hf

    status = exc.response.status_code if getattr(exc, "response", None) is not None else None
    page = f"{endpoint}/{repo_id}"
    if isinstance(exc, hf.GatedRepoError):
        if status == 403:
            raise HubError(
                f"{repo_id} is gated and the token in use has not been granted access (HTTP 403).",
                hint=f"Request access at {page} with the account the token belongs to, or use another token ({_TOKEN_HINT}).",
            ) from None
        raise HubError(
            f"{repo_id} is gated: its files need a Hugging Face token from an account that accepted its terms at {page}.",
            hint=f"Pass one: {_TOKEN_HINT}.",
        ) from None
    if isinstance(exc, hf.RepositoryNotFoundError):
        from llmdeploy.models import bundled_index

        said = exc.response.headers.get("X-Error-Message") if exc.response is not None else None
        names = [n for n, row in bundled_index().items()] + [row["hf_id"] for row in bundled_index().values()]
        guess = did_you_mean(repo_id, names)
        raise UsageError(
            f"model {repo_id!r} not found on the Hugging Face Hub ({endpoint} answered {status}: {said or 'Repository not found'})."
            + (f" Did you mean {guess!r}?" if guess else ""),
            hint="Check the id on the Hub; a private model also needs a token (" + _TOKEN_HINT + ").",
        ) from None
    if isinstance(exc, hf.RevisionNotFoundError):
        raise UsageError(f"revision {revision!r} does not exist in {repo_id} on the Hub.",
                         hint=f"Use a branch, tag or commit listed at {page}/tree/main (or omit --revision).") from None
    if status in (401, 403):
        said = exc.response.headers.get("X-Error-Message") if exc.response is not None else None
        raise HubError(f"the Hub refused the token in use (HTTP {status}: {said or 'unauthorized'}).",
                       hint=f"Check HF_TOKEN or log in again ({_TOKEN_HINT}).") from None


def _commit_of(config_path: Path, revision: str | None) -> str | None:
    # hf_hub_download returns <cache>/models--org--name/snapshots/<commit>/config.json.
    commit = config_path.parent.name
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else revision


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} is not readable JSON ({exc.__class__.__name__}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}.")
    return data


def _facts_path(repo_id: str, commit: str | None) -> Path | None:
    if not commit:
        return None
    from llmdeploy.catalog import user_cache_dir

    return user_cache_dir().parent / "hub" / repo_id / f"{commit}.json"


def _write_facts(path: Path | None, facts: dict[str, Any]) -> None:
    if path is None:
        return
    from llmdeploy.fileio import write_atomic

    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(facts, indent=1, sort_keys=True) + "\n")


def _read_facts(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    # Our own cache: anything not shaped as _write_facts writes it (a hand edit, a torn file) counts as absent.
    if not isinstance(data, dict):
        return None
    parameters, total = data.get("parameters") or {}, data.get("total")

    def whole(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(parameters, dict) or not all(isinstance(k, str) and whole(v) for k, v in parameters.items()):
        return None
    if total is not None and not whole(total):
        return None
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

