"""The model artifact bucket is private, encrypted and versioned, and holds model.tar.gz."""

import tarfile

import pulumi
import pytest

from llmdeploy.infra.artifact import ARTIFACT_KEY, hub_id

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


def test_model_tarball_is_uploaded_from_a_file_asset():
    mocks = run_mode("realtime")
    obj = one(mocks, "aws:s3/bucketObjectv2:BucketObjectv2")
    assert obj.inputs["key"] == ARTIFACT_KEY
    assert isinstance(obj.inputs["source"], pulumi.FileAsset), "model.tar.gz must be uploaded as a FileAsset"
    assert len(obj.inputs["sourceHash"]) == 64, "the sha256 must trigger a new upload when the handler changes"
    bucket = one(mocks, "aws:s3/bucket:Bucket")
    model = one(mocks, "aws:sagemaker/model:Model")
    assert model.inputs["primaryContainer"]["modelDataUrl"] == f"s3://{bucket.outputs['bucket']}/{ARTIFACT_KEY}"


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
