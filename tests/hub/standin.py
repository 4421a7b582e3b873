"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for huggingface_hub to talk to (``HF_ENDPOINT``).

The real thing it mirrors is what ``huggingface_hub`` 2.4.0 (the version in the
dev venv, ``.venv/lib/python3.11/site-packages/huggingface_hub``) sends and
reads, and the Hub's answers as quoted in that library and its users' reports:

- ``hf_api.py`` ``HfApi.model_info``: ``GET {endpoint}/api/models/{repo_id}``, or
  ``/api/models/{repo_id}/revision/{quote(revision, safe='')}``, with
  ``authorization: Bearer <token>``; the JSON body is parsed by
  ``ModelInfo(**data)`` (``sha``, ``gated``, ``private``, ``siblings[].rfilename``,
  ``safetensors: {parameters: {DTYPE: n}, total: n}``). The body below copies the
  keys and order of a real answer for a public model (``_id``, ``id``, ``private``,
  ``pipeline_tag``, ``tags``, ``downloads``, ``likes``, ``modelId``, ``author``,
  ``sha``, ``lastModified``, ``gated``, ``disabled``, ``model-index``, ``config``,
  ``cardData``, ``siblings``, ``spaces``, ``createdAt``, ``safetensors``,
  ``usedStorage``). A gated model's info is public; its ``/revision/`` route and
  its files are not (401 ``GatedRepo`` without a token, as the Hub answered
  ``.../api/models/mistralai/Mistral-7B-Instruct-v0.2/revision/main`` in
  ml-explore/mlx-examples#759).
- ``file_download.py`` ``hf_hub_url`` / ``get_hf_file_metadata`` /
  ``_get_metadata_or_catch_error``: ``HEAD {endpoint}/{repo_id}/resolve/{rev}/{file}``
  (revision quoted with ``safe=''``), which must carry ``X-Repo-Commit`` and an
  ``ETag`` (the git blob sha1 of a file stored in git, quoted) and a
  ``Content-Length``; then ``GET`` of the same URL for the bytes. A missing file
  is 404 ``EntryNotFound`` with ``X-Repo-Commit`` (the library caches the
  absence under ``.no_exist/<commit>/``).
- ``utils/_http.py`` ``hf_raise_for_status``: the exception comes from the
  ``X-Error-Code`` header (``RepoNotFound``, ``GatedRepo``, ``RevisionNotFound``,
  ``EntryNotFound``) and ``X-Error-Message``. The Hub answers an unknown or private
  repo with 401 ``RepoNotFound`` "Repository not found" without a token (404 with
  one); a gated repo with 401 ``GatedRepo`` "Access to model X is restricted. You
  must have access to it and be authenticated to access it. Please log in."
  without a token and 403 ``GatedRepo`` "Access to model X is restricted and you
  are not in the authorized list. Visit https://huggingface.co/X to ask for
  access." with one that has not been granted (messages as quoted in the
  GatedRepoError reports of city96/ComfyUI_ExtraModels#99 and
  ariG23498/gemma3-object-detection#5); a bad token with 401 and
  ``X-Error-Message: Invalid credentials in Authorization header`` (the string
  ``hf_raise_for_status`` tests for); an unknown revision with 404
  ``RevisionNotFound`` "Invalid rev id: ...".

Every request is recorded, so tests can check that only metadata was asked for. Routes the
library calls besides these (its best-effort ``/api/agent-harnesses`` registry) get a 404, which it
ignores. Configs and parameter figures are the real models'; commit ids are made up.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

MODELS_DIR = Path(__file__).resolve().parents[2] / "llmdeploy" / "data" / "models"

TOKEN_GRANTED = "hf_standin_granted_token"  # an account that accepted every gated model's terms
TOKEN_NOT_GRANTED = "hf_standin_other_account"  # a valid token whose account has not


@dataclass
class Repo:
    repo_id: str
    commit: str
    config: dict
    weight_files: list[str]  # names only: the stand-in never serves weights (a request for one fails the test)
    safetensors: dict[str, int] | None  # model info's safetensors.parameters
    index_total_size: int | None = None  # model.safetensors.index.json metadata.total_size (sharded checkpoints)
    gated: str | bool = False
    private: bool = False
    pipeline_tag: str = "text-generation"
    extra_tags: list[str] = field(default_factory=list)

    def files(self) -> dict[str, bytes]:
        out = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
               "README.md": f"# {self.repo_id}\n".encode(),
               "config.json": json.dumps(self.config, indent=2).encode(),
               "generation_config.json": b'{"_from_model_config": true}\n'}
        if self.index_total_size is not None:
            weight_map = {f"model.layers.{i}.weight": name for i, name in enumerate(self.weight_files)}
            out["model.safetensors.index.json"] = json.dumps(
                {"metadata": {"total_size": self.index_total_size}, "weight_map": weight_map}, indent=2).encode()
        return out

    def info(self) -> dict:
        """The body of GET /api/models/{id}, in the keys and order the Hub sends."""
        org = self.repo_id.split("/")[0]
        names = sorted([*self.files(), *self.weight_files])
        body = {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "private": self.private,
            "pipeline_tag": self.pipeline_tag,
            "tags": ["transformers", "safetensors", self.config.get("model_type", ""), self.pipeline_tag, *self.extra_tags,
                     "region:us"],
            "downloads": 1000,
            "likes": 10,
            "modelId": self.repo_id,
            "author": org,
            "sha": self.commit,
            "lastModified": "2026-10-01T12:00:00.000Z",
            "gated": self.gated,
            "disabled": False,
            "model-index": None,
            "config": {"architectures": self.config.get("architectures", []), "model_type": self.config.get("model_type")},
            "cardData": {"license": "other", "pipeline_tag": self.pipeline_tag},
            "siblings": [{"rfilename": n} for n in names],
            "spaces": [],
            "createdAt": "2026-01-01T00:00:00.000Z",
        }
        if self.safetensors is not None:
            body["safetensors"] = {"parameters": dict(self.safetensors), "total": sum(self.safetensors.values())}
        body["usedStorage"] = self.index_total_size or 0
        return body


def _bundled(name: str) -> dict:
    return json.loads((MODELS_DIR / f"{name}.json").read_text())


def default_repos() -> dict[str, Repo]:
    """Public, gated, private: real configs and the parameter figures the Hub publishes for them (made-up commits)."""
    qwen_15b = {  # Qwen/Qwen2.5-1.5B config.json (fields that shape the model)
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
        "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02, "intermediate_size": 8960,
        "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 12,
        "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 131072, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
        "use_sliding_window": False, "vocab_size": 151936,
    }
    llama_70b = {  # meta-llama/Llama-3.1-70B config.json (fields that shape the model)
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
        "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 8192, "initializer_range": 0.02,
        "intermediate_size": 28672, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": 64, "num_hidden_layers": 80, "num_key_value_heads": 8, "pretraining_tp": 1,
        "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": 128256,
    }
    repos = [
        # Single-file checkpoint, no index: the Hub's BF16 count is the model's 1,543,714,304.
        Repo("Qwen/Qwen2.5-1.5B", "8faed761d45a263340a0528343f099c05c9a4323", qwen_15b, ["model.safetensors"],
             {"BF16": 1_543_714_304}),
        # Gated (manual approval), 30 shards; index total_size = 2 bytes × 70,553,706,496.
        Repo("meta-llama/Llama-3.1-70B", "349b2ddb53ce8f2849a6c168a81980ab25258dac", llama_70b,
             [f"model-{i:05d}-of-00030.safetensors" for i in range(1, 31)], {"BF16": 70_553_706_496},
             index_total_size=141_107_412_992, gated="manual"),
        # The Hub's count for GPT-2 (F32 137,022,720) includes the 12 attn.bias causal-mask buffers
        # (12 × 1024 × 1024) the checkpoint stores; the model has 124,439,808 parameters.
        Repo("openai-community/gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e", _bundled("gpt2"), ["model.safetensors"],
             {"F32": 137_022_720}),
        # No closed form: counted on the meta device, or with the Hub's count when transformers is absent.
        Repo("tiiuae/falcon-7b", "ec89142b67d748a1865ea4451372db8313ada0d8", _bundled("falcon-7b"),
             ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], {"BF16": 6_921_720_704},
             index_total_size=13_843_441_408),
        Repo("acme/internal-llm", "0123456789abcdef0123456789abcdef01234567", qwen_15b, ["model.safetensors"],
             {"BF16": 1_543_714_304}, private=True),
    ]
    return {r.repo_id: r for r in repos}


def git_blob_sha1(data: bytes) -> str:
    """A git-stored file's ETag on the Hub: its git blob id."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, repos: dict[str, Repo] | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos if repos is not None else default_repos()
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, sent a token)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> HubStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._route(head=False)

    def do_HEAD(self):
        self._route(head=True)

    # -- answers ------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: dict[str, str], *, head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", "Root=1-standin")
        self.send_header("Access-Control-Expose-Headers",
                         "X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, *, head: bool, commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _token(self) -> str | None:
        auth = self.headers.get("authorization") or ""
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    # -- routing ------------------------------------------------------------------------------------

    def _route(self, *, head: bool) -> None:
        path = urlsplit(self.path).path
        token = self._token()
        self.server.requests.append((self.command, path, token is not None))
        if token is not None and token not in (TOKEN_GRANTED, TOKEN_NOT_GRANTED):
            return self._error(401, None, "Invalid credentials in Authorization header", head=head)
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):]
            repo_id, _, revision = rest.partition("/revision/")
            return self._model_info(unquote(repo_id), unquote(revision) if revision else None, token, head=head)
        parts = path.lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = f"{parts[0]}/{parts[1]}"
            return self._resolve(repo_id, unquote(parts[3]), unquote("/".join(parts[4:])), token, head=head)
        return self._error(404, None, "Not Found", head=head)

    def _visible(self, repo_id: str, token: str | None, head: bool) -> Repo | None:
        repo = self.server.repos.get(repo_id)
        if repo is None or (repo.private and token != TOKEN_GRANTED):
            # The Hub does not tell a private repo from a missing one.
            self._error(404 if token else 401, "RepoNotFound", "Repository not found", head=head)
            return None
        return repo

    def _gate(self, repo: Repo, token: str | None, head: bool) -> bool:
        if not repo.gated or token == TOKEN_GRANTED:
            return True
        if token is None:
            self._error(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have access to it and "
                        "be authenticated to access it. Please log in.", head=head)
        else:
            self._error(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are not in the authorized "
                        f"list. Visit https://huggingface.co/{repo.repo_id} to ask for access.", head=head)
        return False

    def _revision_ok(self, repo: Repo, revision: str, head: bool) -> bool:
        if revision in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        return False

    def _model_info(self, repo_id: str, revision: str | None, token: str | None, *, head: bool) -> None:
        repo = self._visible(repo_id, token, head)
        if repo is None:
            return
        if revision is not None and not (self._gate(repo, token, head) and self._revision_ok(repo, revision, head)):
            return
        body = json.dumps(repo.info()).encode()
        self._send(200, body, {"Content-Type": "application/json; charset=utf-8"}, head=head)

    def _resolve(self, repo_id: str, revision: str, filename: str, token: str | None, *, head: bool) -> None:
        repo = self._visible(repo_id, token, head)
        if repo is None or not self._gate(repo, token, head) or not self._revision_ok(repo, revision, head):
            return
        data = repo.files().get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", head=head, commit=repo.commit)
        self._send(200, data, {
            "Content-Type": "text/plain; charset=utf-8",
            "ETag": f'"{git_blob_sha1(data)}"',
            "X-Repo-Commit": repo.commit,
            "Accept-Ranges": "bytes",
            "Vary": "Origin",
        }, head=head)
