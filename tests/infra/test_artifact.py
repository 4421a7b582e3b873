"""The model artifact bucket is private, encrypted, versioned and TLS-only, and holds a content-addressed model.tar.gz."""

import base64
import json
import tarfile

import pulumi
import pytest

from llmdeploy.infra.artifact import ASYNC_PREFIXES, artifact_key, hub_id

from .mocks import MODES, of_type, one, run, run_mode, stack_config


@pytest.mark.parametrize("mode", MODES)
def test_bucket_must_block_public_access(mode):
    block = one(run_mode(mode), "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block.inputs.get(flag) is True, f"bucket must block public access ({flag} must be true)"


def test_bucket_must_be_encrypted_versioned_and_owner_enforced():
    mocks = run_mode("realtime")
    bucket = one(mocks, "aws:s3/bucket:Bucket")
    sse = one(mocks, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["bucket"] == bucket.id, "encryption must apply to the artifact bucket"
    algorithm = sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"]
    assert algorithm in ("AES256", "aws:kms"), "bucket must encrypt objects at rest"
    versioning = one(mocks, "aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled", "bucket must be versioned"
    ownership = one(mocks, "aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced", "bucket ACLs must be disabled"
    assert one(mocks, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs["bucket"] == bucket.id


def test_model_tarball_is_uploaded_from_a_file_asset_under_its_sha256():
    mocks = run_mode("realtime")
    obj = one(mocks, "aws:s3/bucketObjectv2:BucketObjectv2")
    sha = obj.inputs["sourceHash"]
    assert len(sha) == 64, "the sha256 must trigger a new upload when the handler changes"
    assert obj.inputs["key"] == f"model/{sha}/model.tar.gz" == artifact_key(sha), "the key must carry the archive's sha256"
    assert isinstance(obj.inputs["source"], pulumi.FileAsset), "model.tar.gz must be uploaded as a FileAsset"
    bucket = one(mocks, "aws:s3/bucket:Bucket")
    model = one(mocks, "aws:sagemaker/model:Model")
    assert model.inputs["primaryContainer"]["modelDataUrl"] == f"s3://{bucket.outputs['bucket']}/{obj.inputs['key']}"


def _artifact_reach(mocks) -> tuple[str, str, str]:
    """(object key, the Model's modelDataUrl or '', the launch template's user data or '')."""
    key = one(mocks, "aws:s3/bucketObjectv2:BucketObjectv2").inputs["key"]
    models = of_type(mocks, "aws:sagemaker/model:Model")
    templates = of_type(mocks, "aws:ec2/launchTemplate:LaunchTemplate")
    url = models[0].inputs["primaryContainer"]["modelDataUrl"] if models else ""
    user_data = base64.b64decode(templates[0].inputs["userData"]).decode() if templates else ""
    return key, url, user_data


@pytest.mark.parametrize("mode", ["realtime", "reserved"])
def test_a_dtype_change_reaches_the_model_and_the_launch_template(mode):
    # One stack, deployed three times: the stack name is part of the user data (the GPU metrics' Stack dimension).
    before = _artifact_reach(run(stack_config(mode, dtype="fp16"), stack=f"dtype-{mode}"))
    after = _artifact_reach(run(stack_config(mode, dtype="bf16"), stack=f"dtype-{mode}"))
    assert before[0] != after[0], "a dtype change must upload the archive under a new key (content addressing)"
    if mode == "realtime":
        # Model inputs are replace-on-change in the provider: a new modelDataUrl is a new (auto-named) Model, hence a
        # new endpoint config, which SageMaker rolls out with its blue/green endpoint update.
        assert before[1].endswith(before[0]) and after[1].endswith(after[0]) and before[1] != after[1], \
            "the SageMaker Model must name the new archive, or the endpoint keeps serving the old serving.properties"
    else:
        assert before[0] in before[2] and after[0] in after[2] and before[2] != after[2], \
            "the launch template's user data must name the new archive: a new version the instance refresh rolls out"
    same = _artifact_reach(run(stack_config(mode, dtype="fp16"), stack=f"dtype-{mode}"))
    assert same == before, "an unchanged stack must give the same key (nothing to roll out)"


def test_bucket_denies_requests_without_tls():
    mocks = run_mode("realtime")
    bucket = one(mocks, "aws:s3/bucket:Bucket")
    policy = one(mocks, "aws:s3/bucketPolicy:BucketPolicy")
    assert policy.inputs["bucket"] == bucket.id
    (statement,) = json.loads(policy.inputs["policy"])["Statement"]
    arn = bucket.outputs["arn"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert set(statement["Resource"]) == {arn, f"{arn}/*"}, "the bucket and every object"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, "deny whatever did not come over TLS"


def test_lifecycle_expires_async_objects_and_noncurrent_versions():
    mocks = run_mode("async")
    lifecycle = one(mocks, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert lifecycle.inputs["bucket"] == one(mocks, "aws:s3/bucket:Bucket").id
    rules = lifecycle.inputs["rules"]
    assert all(r["status"] == "Enabled" for r in rules)
    by_prefix = {r["filter"]["prefix"]: r for r in rules}
    for prefix in ASYNC_PREFIXES:
        assert by_prefix[prefix]["expiration"]["days"] >= 1, f"async objects under {prefix} must expire"
    whole = by_prefix[""]
    assert whole["noncurrentVersionExpiration"]["noncurrentDays"] >= 1, "replaced artifact versions must expire"
    assert whole["expiration"]["expiredObjectDeleteMarker"] is True
    assert whole["abortIncompleteMultipartUpload"]["daysAfterInitiation"] >= 1
    cfg = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["asyncInferenceConfig"]
    written = {cfg["outputConfig"]["s3OutputPath"], cfg["outputConfig"]["s3FailurePath"]}
    assert {p for p in ASYNC_PREFIXES if any(w.endswith("/" + p) for w in written)} == set(ASYNC_PREFIXES[1:]), \
        "the lifecycle rules cover the prefixes the endpoint config writes to"


def test_tarball_holds_serving_properties_and_the_handler(tmp_path):
    from llmdeploy.infra.artifact import build_tarball

    path, sha = build_tarball(stack_config("realtime", weights_uri="s3://weights-bucket/flan/"), tmp_path)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        props = tar.extractfile("serving.properties").read().decode()
    assert "model.py" in names and "serving.properties" in names
    assert "option.model_id=s3://weights-bucket/flan/" in props, "weightsUri must reach serving.properties"
    assert build_tarball(stack_config("realtime", weights_uri="s3://weights-bucket/flan/"), tmp_path / "again")[1] == sha, (
        "the artifact must be reproducible")


def test_hub_id():
    assert hub_id("flan-t5-xl") == "google/flan-t5-xl"
    assert hub_id("google/flan-t5-base") == "google/flan-t5-base"


def test_weights_uri_is_readable_by_the_role():
    mocks = run(stack_config("realtime", weights_uri="s3://weights-bucket/flan/"), stack="weights")
    policy = one(mocks, "aws:iam/rolePolicy:RolePolicy").inputs["policy"]
    assert "arn:aws:s3:::weights-bucket/flan/*" in policy
    assert len(of_type(mocks, "aws:s3/bucket:Bucket")) == 1


def _packaged(config, tmp_path) -> dict[str, str]:
    from llmdeploy.infra.artifact import build_tarball

    path, _ = build_tarball(config, tmp_path)
    with tarfile.open(path) as tar:
        text = tar.extractfile("serving.properties").read().decode()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("mode", MODES)
def test_auto_batching_is_static_on_gpu_instances_and_rolling_on_serverless(mode, tmp_path):
    """batching auto: static batches where the model server has GPUs (the catalog's gpu_count of the stack's
    g4dn types), iteration-level on serverless (CPUs)."""
    props = _packaged(stack_config(mode, max_batch_size=12, max_batch_delay_ms=25), tmp_path)
    if mode == "serverless":
        assert (props["option.rolling_batch"], props["option.max_rolling_batch_size"], props["batch_size"]) == \
            ("llmdeploy", "12", "1")
        assert "max_batch_delay" not in props
    else:
        assert (props["option.rolling_batch"], props["batch_size"], props["max_batch_delay"]) == ("disable", "12", "25")
        assert "option.max_rolling_batch_size" not in props


def test_explicit_batching_wins_over_the_device(tmp_path):
    gpu_continuous = _packaged(stack_config("realtime", batching="continuous", max_batch_size=6), tmp_path / "a")
    assert (gpu_continuous["option.rolling_batch"], gpu_continuous["option.max_rolling_batch_size"]) == ("llmdeploy", "6")
    cpu_static = _packaged(stack_config("serverless", batching="static", max_batch_size=6), tmp_path / "b")
    assert (cpu_static["option.rolling_batch"], cpu_static["batch_size"]) == ("disable", "6")
    # ctranslate2 has no decode loop to roll: static whatever batching says
    ct2 = _packaged(stack_config("realtime", backend="ctranslate2", batching="continuous"), tmp_path / "c")
    assert ct2["option.rolling_batch"] == "disable"
