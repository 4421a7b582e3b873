"""Least privilege: no s3 on *, no * resource but ecr:GetAuthorizationToken, no FullAccess policies."""

import json

import pytest

from llmdeploy.infra import iam
from llmdeploy.monitoring import GPU_NAMESPACE

from .mocks import MODES, as_list, of_type, one, policy_documents, run_mode, statements


def _allow_statements(mocks):
    for name, doc in policy_documents(mocks):
        for st in statements(doc):
            if st.get("Effect") == "Allow" and "Action" in st and "Resource" in st:
                yield name, st


@pytest.mark.parametrize("mode", MODES)
def test_no_iam_policy_may_grant_s3_on_star(mode):
    for name, st in _allow_statements(run_mode(mode)):
        if any(a.startswith("s3:") or a == "*" for a in as_list(st["Action"])):
            for res in as_list(st["Resource"]):
                assert res not in ("*", "arn:aws:s3:::*", "arn:aws:s3:::*/*"), f"no IAM policy may grant s3 on * ({name})"
                assert res.startswith("arn:aws:s3:::") and not res.startswith("arn:aws:s3:::*"), f"no IAM policy may grant s3 on * ({name})"


@pytest.mark.parametrize("mode", MODES)
def test_only_ecr_login_may_use_a_star_resource(mode):
    for name, st in _allow_statements(run_mode(mode)):
        if "*" in as_list(st["Resource"]):
            if as_list(st["Action"]) == ["cloudwatch:PutMetricData"]:
                # No resource ARNs exist for it: the namespace condition is what scopes it (one namespace, exactly).
                assert st["Condition"] == {"StringEquals": {"cloudwatch:namespace": GPU_NAMESPACE}}, (
                    f"PutMetricData on '*' must be pinned to the {GPU_NAMESPACE} namespace ({name})")
                continue
            assert as_list(st["Action"]) == ["ecr:GetAuthorizationToken"], (
                f"only ecr:GetAuthorizationToken (and namespace-pinned PutMetricData) may use Resource '*' ({name}: {st['Action']})")
        assert "*" not in as_list(st["Action"]), f"no IAM policy may allow every action ({name})"


@pytest.mark.parametrize("mode", MODES)
def test_no_managed_fullaccess_policy(mode):
    mocks = run_mode(mode)
    attached = [a.inputs["policyArn"] for a in of_type(mocks, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")]
    for role in of_type(mocks, "aws:iam/role:Role"):
        attached += role.inputs.get("managedPolicyArns") or []
    assert not [a for a in attached if "FullAccess" in a], "no managed FullAccess policy"
    # The one managed policy: Session Manager for reserved-mode operators (there is no SSH).
    assert set(attached) <= {"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}


@pytest.mark.parametrize("mode", ["realtime", "async", "serverless"])
def test_sagemaker_role_reads_the_artifact_pulls_the_image_and_logs(mode):
    mocks = run_mode(mode)
    role = one(mocks, "aws:iam/role:Role")
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert one(mocks, "aws:sagemaker/model:Model").inputs["executionRoleArn"] == role.outputs["arn"]
    policy = one(mocks, "aws:iam/rolePolicy:RolePolicy")
    assert policy.inputs["role"] == role.id
    by_sid = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    bucket_arn = one(mocks, "aws:s3/bucket:Bucket").outputs["arn"]
    assert f"{bucket_arn}/model/*" in by_sid["ReadObjects"]["Resource"]
    assert by_sid["EcrPull"]["Resource"][0].startswith("arn:aws:ecr:us-east-1:763104351884:repository/")
    assert all(r.startswith("arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/")
               for r in by_sid["Logs"]["Resource"])


def test_instance_role_reads_only_the_artifact_bucket_objects():
    mocks = run_mode("reserved")
    bucket_arn = one(mocks, "aws:s3/bucket:Bucket").outputs["arn"]
    doc = json.loads(one(mocks, "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    s3 = [s for s in doc["Statement"] if any(a.startswith("s3:") for a in as_list(s["Action"]))]
    assert s3 and all(r.startswith(f"{bucket_arn}/") for s in s3 for r in as_list(s["Resource"])), (
        "the instance role may read only the artifact bucket's objects")
    actions = {a for s in doc["Statement"] for a in as_list(s["Action"])}
    assert actions == {"s3:GetObject", "ecr:GetAuthorizationToken", *iam.ECR_PULL_ACTIONS, "cloudwatch:PutMetricData"}


def test_sids_are_unique():
    doc = iam.sagemaker_execution_policy(
        bucket_arn="arn:aws:s3:::b", read_prefixes=["model/", "async-input/"], log_group_arn_prefix="arn:aws:logs:r:1:log-group:/x/",
        ecr_repository_arn="arn:aws:ecr:r:1:repository/x", weights_uri="s3://w/p/", output_prefixes=["o/"],
        topic_arns=["arn:aws:sns:r:1:t"], kms_key_arn="arn:aws:kms:r:1:key/k")
    sids = [s["Sid"] for s in doc["Statement"]]
    assert len(sids) == len(set(sids)), "IAM rejects a policy with duplicate Sids"


@pytest.mark.parametrize("mode", ["realtime", "async", "serverless"])
def test_sagemaker_trust_policy_is_limited_to_this_account(mode):
    from llmdeploy.infra.offline_preview import FAKE_ACCOUNT

    (statement,) = statements(json.loads(one(run_mode(mode), "aws:iam/role:Role").inputs["assumeRolePolicy"]))
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": FAKE_ACCOUNT}}, \
        "SageMaker may assume the execution role only for this account's resources (confused deputy)"


def test_ec2_trust_policy_has_no_source_account_condition():
    (statement,) = statements(json.loads(one(run_mode("reserved"), "aws:iam/role:Role").inputs["assumeRolePolicy"]))
    assert statement["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert "Condition" not in statement, \
        "EC2 sets no aws:SourceAccount when it assumes an instance role: the condition would leave instances without credentials"
