"""The model artifact: a private, encrypted, versioned S3 bucket holding model.tar.gz.

The tarball (serving.properties + the handler files, see containers/package.py)
is built before the program registers anything and uploaded as one object; its
sha256 is the object's ``source_hash`` so a changed handler means a new upload.
Async endpoints write their results under prefixes of the same bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws

ARTIFACT_PREFIX = "model/"
ARTIFACT_KEY = ARTIFACT_PREFIX + "model.tar.gz"


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
        aws.s3.BucketVersioning(f"{name}-versioning", bucket=bucket.id,
                                versioning_configuration={"status": "Enabled"}, opts=child)
        obj = aws.s3.BucketObjectv2(
            f"{name}-tarball",
            bucket=bucket.id,
            key=ARTIFACT_KEY,
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


def build_tarball(config, out_dir: str | Path) -> tuple[str, str]:
    """Build model.tar.gz for ``config`` with containers/package.py; (path, sha256).

    The weights are not packaged: serving.properties names ``weightsUri`` (LMI
    downloads s3:// prefixes itself) or the Hugging Face Hub id.
    """
    from llmdeploy.containers.package import PackageSettings, build_model_tarball

    settings = PackageSettings(
        dtype=config.dtype,
        tensor_parallel_degree=config.tensor_parallel_degree,
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
