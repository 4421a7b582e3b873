"""The model artifact: a private, encrypted, versioned, TLS-only S3 bucket holding model.tar.gz.

The tarball (serving.properties + the handler files, see containers/package.py)
is built before the program registers anything and uploaded as one object whose
key carries its sha256 (``model/<sha256>/model.tar.gz``, content addressed). A
changed handler, dtype, TP degree, batch size or batching, token cap or weights URI is a new key, so everything
that names the artifact changes with it: the SageMaker Model (replaced, hence a
new endpoint config and SageMaker's blue/green endpoint update) and the reserved
launch template's user data (a new version, rolled out by the ASG's instance
refresh). A fixed key would only rewrite the object: running endpoints would
keep the old serving.properties and instances launched later the new one.

Async endpoints write their results under prefixes of the same bucket; lifecycle
rules expire those, and the noncurrent versions old artifacts leave behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws

from llmdeploy.infra import iam

ARTIFACT_PREFIX = "model/"
ASYNC_INPUT_PREFIX = "async-input/"
ASYNC_OUTPUT_PREFIX = "async-output/"
ASYNC_FAILURE_PREFIX = "async-failures/"
ASYNC_PREFIXES = (ASYNC_INPUT_PREFIX, ASYNC_OUTPUT_PREFIX, ASYNC_FAILURE_PREFIX)
# Lifecycle (our retention choices, not AWS limits): async requests and results are fetched within days; an old
# artifact version stays restorable for a month after a newer one replaced it.
ASYNC_OBJECT_DAYS = 7
NONCURRENT_VERSION_DAYS = 30
INCOMPLETE_UPLOAD_DAYS = 1


def artifact_key(sha256: str) -> str:
    """``model/<sha256>/model.tar.gz``: the key changes whenever the archive does (content addressing)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{ARTIFACT_PREFIX}{sha256}/model.tar.gz"


@dataclass
class ModelArtifactArgs:
    tarball: str  # path of the built model.tar.gz
    sha256: str
    tags: dict[str, str] = field(default_factory=dict)
    weights_uri: str = ""  # optional s3:// prefix with the weights, read by the container itself
    # Destroying the stack also deletes the uploaded artifact and async results.
    force_destroy: bool = True


class ModelArtifact(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    model_data_url: pulumi.Output[str]

    def __init__(self, name: str, args: ModelArtifactArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmdeploy:storage:ModelArtifact", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=args.force_destroy, tags=args.tags, opts=child)
        # Private: ACLs off (owner enforced) and all four public-access switches on.
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"}, opts=child,
        )
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access", bucket=bucket.id,
            block_public_acls=True, block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True,
            opts=child,
        )
        # SSE-S3 (AES256) for the artifact: it needs no key grants for SageMaker or the
        # instances, and the artifact is code, not data. Async results use their own KMS key.
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}, "bucket_key_enabled": True}],
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(f"{name}-versioning", bucket=bucket.id,
                                             versioning_configuration={"status": "Enabled"}, opts=child)
        # TLS only: deny every request that did not arrive over HTTPS (aws:SecureTransport false).
        aws.s3.BucketPolicy(
            f"{name}-tls-only", bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: iam.to_json(iam.tls_only_bucket_policy(arn))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_block]),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=bucket.id, rules=lifecycle_rules(),
            # S3 needs versioning settled before rules on noncurrent versions.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        obj = aws.s3.BucketObjectv2(
            f"{name}-tarball",
            bucket=bucket.id,
            key=artifact_key(args.sha256),
            source=pulumi.FileAsset(str(Path(args.tarball))),
            source_hash=args.sha256,
            content_type="application/gzip",
            server_side_encryption="AES256",
            tags=args.tags,
            # Upload only once the bucket is private.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ownership, public_block]),
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.model_data_url = pulumi.Output.concat("s3://", bucket.bucket, "/", obj.key)
        self.weights_uri = args.weights_uri
        self.register_outputs({
            "bucket_name": self.bucket_name,
            "bucket_arn": self.bucket_arn,
            "model_data_url": self.model_data_url,
            "weights_uri": self.weights_uri,
        })


def lifecycle_rules() -> list[aws.s3.BucketLifecycleConfigurationRuleArgsDict]:
    """Expire async requests, results and failures; expire noncurrent versions (an artifact a newer one replaced)
    and the delete markers they leave; abort multipart uploads that never finished."""
    rules: list[aws.s3.BucketLifecycleConfigurationRuleArgsDict] = [
        {"id": f"expire-{prefix.rstrip('/')}", "status": "Enabled", "filter": {"prefix": prefix},
         "expiration": {"days": ASYNC_OBJECT_DAYS}} for prefix in ASYNC_PREFIXES]
    rules.append({
        "id": "expire-noncurrent-versions", "status": "Enabled", "filter": {"prefix": ""},
        "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_VERSION_DAYS},
        "expiration": {"expired_object_delete_marker": True},
        "abort_incomplete_multipart_upload": {"days_after_initiation": INCOMPLETE_UPLOAD_DAYS},
    })
    return rules


def build_tarball(config, out_dir: str | os.PathLike, catalog=None) -> tuple[str, str]:
    """Build model.tar.gz for ``config`` with containers/package.py; (path, sha256).

    The weights are not packaged: serving.properties names ``weightsUri`` (LMI
    downloads s3:// prefixes itself) or the Hugging Face Hub id. The stack's ``batching``
    is resolved for where the server runs (StackConfig.served_batching: auto = static on
    a GPU instance type, continuous on serverless or a CPU type), with ``catalog``'s
    gpu_count (the bundled catalog when None).
    """
    from llmdeploy.catalog import load_catalog
    from llmdeploy.containers.package import PackageSettings, build_model_tarball

    settings = PackageSettings(
        dtype=config.dtype,
        backend=config.backend,
        batching=config.served_batching(catalog if catalog is not None else load_catalog()),
        tensor_parallel_degree=config.tensor_parallel_degree,
        # plan's batch and caps (maxBatchSize, maxNewTokens, maxRequestTokens) and the user's serving settings
        max_batch_size=config.max_batch_size,
        max_batch_delay_ms=config.max_batch_delay_ms,
        max_new_tokens=config.max_new_tokens,
        max_num_beams=config.max_num_beams,
        max_request_tokens=config.max_request_tokens,
        model_id=config.weights_uri or hub_id(config.model),
    )
    result = build_model_tarball(Path(out_dir) / "model.tar.gz", settings)
    return str(result.path), result.sha256


def hub_id(model: str) -> str:
    """The Hugging Face Hub id for a model name: ids pass through, FLAN-T5 names are Google's."""
    if "/" in model:
        return model
    if model.startswith(("flan-t5", "t5-")):
        return f"google/{model}"
    return model
