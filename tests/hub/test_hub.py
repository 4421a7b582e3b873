"""`estimate` / `plan` with Hugging Face Hub ids, against the Hub stand-in on 127.0.0.1 (see standin.py).

The stand-in mirrors the Hub's HTTP answers as huggingface_hub 2.4.0 (the venv's copy: hf_api.py,
file_download.py, utils/_http.py) asks for and reads them; every command here is the real CLI in its own
process with HF_ENDPOINT pointing at it. No test touches the internet.
"""

from __future__ import annotations

import json

import pytest
import yaml

from .standin import TOKEN_GRANTED, TOKEN_NOT_GRANTED

QWEN = "Qwen/Qwen2.5-1.5B"
LLAMA_70B = "meta-llama/Llama-3.1-70B"


def model_requests(hub) -> list[tuple[str, str]]:
    """What was asked of the Hub about models (huggingface_hub also fetches a telemetry registry)."""
    return [(method, path) for method, path, _ in hub.requests if not path.startswith("/api/agent-harnesses")]


def one_error_line(result) -> str:
    lines = result.error_lines
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_a_public_hub_model_is_sized_from_its_metadata_alone(cli, hub):
    r = cli("estimate", QWEN, "--json")
    assert r.code == 0, r.stderr
    data = r.json
    assert data["model"]["hf_id"] == QWEN and data["model"]["revision"] == "8faed761d45a263340a0528343f099c05c9a4323"
    assert data["parameters"] == 1_543_714_304  # the qwen2 closed form on the Hub's config
    pc = data["parameter_count"]
    assert pc["used"] == "llmdeploy" and pc["hub"] == 1_543_714_304 and pc["difference"] == 0
    assert pc["hub_by_dtype"] == {"BF16": 1_543_714_304} and pc["hub_kind"] == "hub"
    assert data["dtype"] == "bf16", "the config's torch_dtype is the default dtype"
    # KV cache from the Hub config's 2 KV heads of 128: 28 layers × 2 × 256 × 320 tokens × 2 bytes.
    assert data["inference"]["kv_cache_bytes"] == 28 * 2 * 256 * 320 * 2
    # Only metadata: the model info and config.json (no index in this repo), never a weights file.
    assert model_requests(hub) == [
        ("GET", f"/api/models/{QWEN}"),
        ("HEAD", f"/{QWEN}/resolve/main/config.json"),
        ("GET", f"/{QWEN}/resolve/main/config.json"),
    ]
    assert r.stderr == "", "online, there is nothing to note"


def test_text_output_puts_our_count_beside_the_hubs_and_says_which_is_used(cli):
    r = cli("estimate", QWEN)
    assert r.code == 0, r.stderr
    assert "Parameters: 1,543,714,304" in r.stdout
    assert "Hub: 1,543,714,304 (BF16 1,543,714,304; from the Hub at" in r.stdout and "sizing uses ours" in r.stdout


def test_a_difference_from_the_hub_is_shown_not_hidden(cli):
    """GPT-2's checkpoint stores 12 causal-mask buffers the Hub counts as parameters."""
    r = cli("estimate", "openai-community/gpt2", "--revision", "main", "--json")
    assert r.code == 0, r.stderr
    pc = r.json["parameter_count"]
    assert pc["llmdeploy"] == 124_439_808 and pc["hub"] == 137_022_720
    assert pc["difference"] == 12 * 1024 * 1024 and pc["used"] == "llmdeploy"
    text = cli("estimate", "openai-community/gpt2", "--revision", "main").stdout
    assert "Hub: 137,022,720 (F32 137,022,720;" in text and "12,582,912 more than ours (+10.11%); sizing uses ours" in text


def test_a_bundled_models_hub_id_stays_offline_unless_a_revision_is_asked_for(cli, hub):
    r = cli("estimate", "openai-community/gpt2", "--json")
    assert r.code == 0 and r.json["model"]["origin"] == "bundled" and model_requests(hub) == []
    assert r.json["parameter_count"]["hub_kind"] == "published"


def test_a_revision_reads_that_commit(cli, hub):
    commit = "8faed761d45a263340a0528343f099c05c9a4323"
    r = cli("estimate", QWEN, "--revision", commit, "--json")
    assert r.code == 0, r.stderr
    assert r.json["hub"]["revision"] == commit and r.json["hub"]["commit"] == commit
    assert ("GET", f"/api/models/{QWEN}/revision/{commit}") in model_requests(hub)
    assert ("GET", f"/{QWEN}/resolve/{commit}/config.json") in model_requests(hub)
    bad = cli("estimate", QWEN, "--revision", "no-such-branch")
    assert bad.code == 2 and "revision 'no-such-branch' does not exist in Qwen/Qwen2.5-1.5B" in one_error_line(bad)


def test_a_gated_model_without_a_token_is_one_line_saying_how_to_pass_one(cli, hub):
    r = cli("estimate", LLAMA_70B)
    assert r.code == 1 and r.stdout == ""
    line = one_error_line(r)
    assert f"{LLAMA_70B} is gated" in line and "HF_TOKEN" in line and f"{hub.url}/{LLAMA_70B}" in line
    # The model info is public; its /revision/ route is gated like the files (the Hub's behaviour).
    assert ("GET", f"/api/models/{LLAMA_70B}") in model_requests(hub)
    pinned = cli("estimate", LLAMA_70B, "--revision", "main")
    assert pinned.code == 1 and f"{LLAMA_70B} is gated" in one_error_line(pinned)


def test_a_token_without_access_is_told_to_request_it(cli):
    r = cli("estimate", LLAMA_70B, token=TOKEN_NOT_GRANTED)
    assert r.code == 1 and "has not been granted access (HTTP 403)" in one_error_line(r)


def test_a_bad_token_is_one_line(cli):
    r = cli("estimate", QWEN, token="hf_revoked")
    assert r.code == 1 and "refused the token in use (HTTP 401: Invalid credentials in Authorization header)" in one_error_line(r)


def test_a_gated_model_works_with_a_token_and_reads_the_safetensors_index(cli, hub):
    r = cli("estimate", LLAMA_70B, "--json", token=TOKEN_GRANTED)
    assert r.code == 0, r.stderr
    data = r.json
    assert data["parameters"] == 70_553_706_496 and data["parameter_count"]["difference"] == 0
    assert data["hub"]["weights_bytes"] == 141_107_412_992 == 2 * data["parameters"], "index total_size = bf16 bytes"
    assert data["hub"]["gated"] == "manual"
    # GQA: 8 KV heads of 128 over 80 layers, not 64.
    assert data["inference"]["kv_cache_bytes"] == 80 * 2 * 8 * 128 * 320 * 2
    asked = model_requests(hub)
    assert any(path.endswith("/model.safetensors.index.json") for _, path in asked)
    assert not [p for _, p in asked if p.endswith(".safetensors")], "no weights file is ever requested"
    assert all(sent for method, path, sent in hub.requests if "/api/agent-harnesses" not in path), "the token goes with every call"


def test_a_typo_gets_the_hubs_not_found_and_our_did_you_mean(cli):
    r = cli("estimate", "google/flan-t5-xxxl")
    assert r.code == 2
    line = one_error_line(r)
    assert "not found on the Hugging Face Hub" in line and "answered 401: Repository not found" in line
    assert "Did you mean 'google/flan-t5-xxl'?" in line


def test_a_private_model_is_not_found_without_its_token_and_found_with_it(cli):
    assert "not found on the Hugging Face Hub" in one_error_line(cli("estimate", "acme/internal-llm"))
    assert cli("estimate", "acme/internal-llm", "--json", token=TOKEN_GRANTED).json["parameters"] == 1_543_714_304


def test_offline_uses_the_cached_copy_with_the_same_numbers(cli, hub):
    online = cli("estimate", LLAMA_70B, "--json", token=TOKEN_GRANTED).json
    hub.requests.clear()
    offline = cli("estimate", LLAMA_70B, "--json", offline=True)
    assert offline.code == 0, offline.stderr
    assert hub.requests == [], "HF_HUB_OFFLINE: nothing is asked of the Hub"
    assert offline.error_lines == [f"Note: HF_HUB_OFFLINE is set: using the cached copy of {LLAMA_70B}."]
    data = offline.json
    assert data["parameters"] == online["parameters"] and data["parameter_count"]["hub"] == online["parameter_count"]["hub"]
    assert data["hub"]["weights_bytes"] == online["hub"]["weights_bytes"] and data["hub"]["commit"] == online["hub"]["commit"]
    never = cli("estimate", QWEN, offline=True)
    assert never.code == 1 and "HF_HUB_OFFLINE is set, and Qwen/Qwen2.5-1.5B is not in the local Hugging Face cache" in (
        one_error_line(never))


def test_an_unreachable_hub_falls_back_to_the_cache_in_one_line(cli, hub):
    assert cli("estimate", QWEN, "--json").code == 0
    closed = f"http://127.0.0.1:{_closed_port()}"
    r = cli("estimate", QWEN, "--json", endpoint=closed)
    assert r.code == 0, r.stderr
    assert len(r.error_lines) == 1 and r.error_lines[0].startswith(f"Note: the Hub at {closed} is unreachable (")
    assert r.json["parameters"] == 1_543_714_304 and r.json["parameter_count"]["hub"] == 1_543_714_304
    never = cli("estimate", "tiiuae/falcon-7b", "--revision", "main", endpoint=closed)
    assert never.code == 1 and f"the Hub at {closed} is unreachable" in one_error_line(never)


def test_plan_stack_records_the_hub_id_and_the_commit_it_sized(cli, tmp_path):
    r = cli("plan", "--model", QWEN, "--mode", "reserved", "--stack", "dev", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    plan = r.json
    assert plan["model"]["hf_id"] == QWEN and plan["model"]["revision"] == "8faed761d45a263340a0528343f099c05c9a4323"
    stack = yaml.safe_load((tmp_path / "Pulumi.dev.yaml").read_text())["config"]
    assert stack["llmdeploy:model"] == QWEN
    assert stack["llmdeploy:modelRevision"] == plan["model"]["revision"]
    assert stack["llmdeploy:dtype"] == plan["dtype"] == "bf16"


def test_an_architecture_without_a_closed_form_is_counted_on_the_meta_device(cli):
    r = cli("estimate", "tiiuae/falcon-7b", "--revision", "main", "--json")
    assert r.code == 0, r.stderr
    pc = r.json["parameter_count"]
    assert pc["llmdeploy"] == pc["hub"] == 6_921_720_704 and pc["method"].startswith("meta device, transformers ")
    assert r.json["hub"]["weights_bytes"] == 13_843_441_408


def test_without_transformers_the_hubs_count_is_used_and_said_to_be(cli):
    r = cli("estimate", "tiiuae/falcon-7b", "--revision", "main", "--json", blocked=("torch", "transformers"))
    assert r.code == 0, r.stderr
    pc = r.json["parameter_count"]
    assert pc["used"] == "hub" and pc["llmdeploy"] is None and r.json["parameters"] == 6_921_720_704
    assert pc["method"].startswith("the Hub's count, from the Hub at") and "on the meta device needs torch" in pc["method"]
    # Multi-query attention still shapes the KV cache: one KV head of 64 over 32 layers.
    assert r.json["inference"]["kv_cache_bytes"] == 32 * 2 * 64 * 320 * 2
    text = cli("estimate", "tiiuae/falcon-7b", "--revision", "main", blocked=("torch", "transformers")).stdout
    assert "used, as llmdeploy has no count of its own" in text


def test_without_the_hub_extra_a_hub_id_names_the_extra_and_bundled_models_still_work(cli, hub):
    r = cli("estimate", QWEN, blocked=("huggingface_hub", "httpx2"))
    assert r.code == 1 and "pip install 'llmdeploy[hub]'" in one_error_line(r)
    assert cli("estimate", "flan-t5-xl", "--json", blocked=("huggingface_hub", "httpx2", "torch", "transformers")).code == 0
    assert model_requests(hub) == []


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("args", [["estimate", "not a/hub id"], ["estimate", "org/name/extra"]])
def test_what_is_neither_bundled_nor_a_path_nor_a_hub_id_is_an_unknown_model(cli, args):
    r = cli(*args)
    assert r.code == 2 and "unknown model" in one_error_line(r) and "Hugging Face Hub id (org/name)" in r.stderr


def test_the_standin_answers_model_info_in_the_shape_huggingface_hub_parses(hub):
    """ModelInfo(**body) is what HfApi.model_info returns: parse the stand-in's body with the real class."""
    import urllib.request

    from huggingface_hub.hf_api import ModelInfo

    with urllib.request.urlopen(f"{hub.url}/api/models/{QWEN}") as resp:
        info = ModelInfo(**json.loads(resp.read()))
    assert info.id == QWEN and info.safetensors.total == 1_543_714_304 and info.gated is False
    assert "config.json" in {s.rfilename for s in info.siblings}
