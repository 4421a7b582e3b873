"""Least-privilege IAM policy documents, as pure functions of ARNs (tested without Pulumi).

Rules every document here keeps (tests/infra/test_iam.py checks them on what the
program registers):
- no ``*`` resource except for ``ecr:GetAuthorizationToken``, which IAM only
  accepts on ``*`` (it is account-wide: it returns a registry login token and
  grants no image access by itself), and ``cloudwatch:PutMetricData``, which has
  no resource-level permissions either and is pinned to one namespace by the
  ``cloudwatch:namespace`` condition key instead;
- S3 access names the artifact bucket's objects (``arn:...:bucket/prefix*``), never ``*``;
- no AWS managed *FullAccess policies anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

ECR_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
# The one managed policy llmdeploy attaches: Session Manager for operators of the
# reserved (EC2) mode, which has no SSH. It is scoped to the SSM agent's channels,
# not a FullAccess policy, and copying it inline would need the same "*" resources.
SSM_CORE_POLICY = "arn:{partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"


def document(statements: Iterable[dict]) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def to_json(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True)


def assume_role_policy(service: str, source_account: str | None = None) -> str:
    """Trust policy letting one AWS service (``sagemaker.amazonaws.com``, ``ec2.amazonaws.com``) assume the role.

    ``source_account``: only when the service acts for a resource of this account (``aws:SourceAccount``, the
    confused-deputy guard in SageMaker's "Cross-service confused deputy prevention" guide, section "SageMaker AI
    Inference": https://docs.aws.amazon.com/sagemaker/latest/dg/security-confused-deputy-prevention.html).
    EC2 instance roles get none: EC2 assumes them for an instance profile, not on behalf of a resource, and sets
    no ``aws:SourceAccount`` in that request, so the condition would leave instances without credentials; who may
    hand the role to an instance is what ``iam:PassRole`` (same account only) controls.
    """
    statement: dict = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if source_account:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": source_account}}
    return to_json(document([statement]))


def tls_only_bucket_policy(bucket_arn: str) -> dict:
    """Deny any request to the bucket or its objects that did not come over TLS."""
    return document([{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                      "Resource": [bucket_arn, f"{bucket_arn}/*"],
                      "Condition": {"Bool": {"aws:SecureTransport": "false"}}}])


def s3_uri_parts(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix


def s3_read(bucket_arn: str, prefixes: Sequence[str], sid: str = "ReadObjects") -> list[dict]:
    """Read the objects under ``prefixes`` of one bucket (a single GetObject statement; Sids must be unique)."""
    return [{"Sid": sid, "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{bucket_arn}/{p}*" for p in prefixes]}]


def s3_write(bucket_arn: str, prefixes: Sequence[str]) -> list[dict]:
    return [{"Sid": "WriteResults", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
             "Resource": [f"{bucket_arn}/{p}*" for p in prefixes]}]


def checkpoint_read_write(checkpoint_uri: str, partition: str = "aws") -> list[dict]:
    """Read, write and delete objects under one ``s3://bucket/prefix/`` (fine-tune checkpoints), list only there."""
    bucket, prefix = s3_uri_parts(checkpoint_uri)
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    return [
        {"Sid": "Checkpoints", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
         "Resource": [f"{bucket_arn}/{prefix}*"]},
        {"Sid": "ListCheckpoints", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket_arn],
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
    ]


def weights_read(weights_uri: str, partition: str = "aws") -> list[dict]:
    """Read (and list, LMI copies a prefix) the ``weightsUri`` prefix, often in another bucket."""
    if not weights_uri:
        return []
    bucket, prefix = s3_uri_parts(weights_uri)
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    listing: dict[str, object] = {"Sid": "ListWeights", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket_arn]}
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    return s3_read(bucket_arn, [prefix], sid="ReadWeights") + [listing]


def ecr_pull(repository_arn: str | None) -> list[dict]:
    statements = [
        # GetAuthorizationToken has no resource-level permissions: "*" is the only
        # value IAM accepts, and the token alone grants access to no image.
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
    ]
    if repository_arn:
        statements.append({"Sid": "EcrPull", "Effect": "Allow", "Action": ECR_PULL_ACTIONS, "Resource": [repository_arn]})
    return statements


def cloudwatch_logs(log_group_arn_prefix: str) -> list[dict]:
    """Write the endpoint's container logs (``/aws/sagemaker/Endpoints/<name>``)."""
    return [{"Sid": "Logs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
             "Resource": [f"{log_group_arn_prefix}*", f"{log_group_arn_prefix}*:log-stream:*"]}]


def kms_use(key_arn: str) -> list[dict]:
    return [{"Sid": "UseOutputKey", "Effect": "Allow",
             "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"], "Resource": [key_arn]}]


def sns_publish(topic_arns: Sequence[str]) -> list[dict]:
    return [{"Sid": "Notify", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": list(topic_arns)}]


def sagemaker_execution_policy(*, bucket_arn: str, read_prefixes: Sequence[str], log_group_arn_prefix: str,
                               ecr_repository_arn: str | None, weights_uri: str = "", partition: str = "aws",
                               output_prefixes: Sequence[str] = (), topic_arns: Sequence[str] = (),
                               kms_key_arn: str | None = None) -> dict:
    """The SageMaker execution role: read the model (and async inputs), pull the image, write logs;
    async adds writing results, publishing to its two topics and using its KMS key."""
    statements = s3_read(bucket_arn, read_prefixes) + weights_read(weights_uri, partition) + ecr_pull(ecr_repository_arn)
    statements += cloudwatch_logs(log_group_arn_prefix)
    if output_prefixes:
        statements += s3_write(bucket_arn, output_prefixes)
    if topic_arns:
        statements += sns_publish(topic_arns)
    if kms_key_arn:
        statements += kms_use(kms_key_arn)
    return document(statements)


def put_metric_data(namespace: str) -> list[dict]:
    """Publish metrics (the CloudWatch agent's) into one namespace only.

    PutMetricData supports no resource ARNs, so IAM only accepts ``*`` here; the ``cloudwatch:namespace``
    condition key is what scopes it (AWS: "Using condition keys to limit access to CloudWatch namespaces").
    """
    return [{"Sid": "PutGpuMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*",
             "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}}}]


def instance_policy(*, bucket_arn: str, artifact_prefix: str, ecr_repository_arn: str | None,
                    weights_uri: str = "", partition: str = "aws", metrics_namespace: str | None = None) -> dict:
    """The reserved-mode instance role: fetch the model artifact (and weights), pull the image and, with
    ``metrics_namespace``, publish GPU metrics there; nothing else."""
    statements = s3_read(bucket_arn, [artifact_prefix]) + weights_read(weights_uri, partition) + ecr_pull(ecr_repository_arn)
    return document(statements + (put_metric_data(metrics_namespace) if metrics_namespace else []))
