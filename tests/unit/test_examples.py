"""The CI examples users copy (examples/*.yml): valid workflows that call llmdeploy the way the CLI accepts,
hardened the way zizmor and GitHub's security guidance ask, and documenting IAM policies that cover exactly
the AWS calls each job makes."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from llmdeploy.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))
IAM_DIR = ROOT / "examples" / "iam"
WORKFLOWS = {p.name: yaml.safe_load(p.read_text()) for p in EXAMPLES}
# YAML 1.1 reads the `on:` key as True.
TRIGGERS = {name: wf.get("on", wf.get(True)) for name, wf in WORKFLOWS.items()}

AWS_CREDENTIALS = "aws-actions/configure-aws-credentials"
CHECKOUT = "actions/checkout"
PR_COMMENT = "marocchino/sticky-pull-request-comment"


def _jobs():
    return [(name, job_id, job) for name, wf in WORKFLOWS.items() for job_id, job in wf["jobs"].items()]


def _action(step) -> str:
    return step.get("uses", "").split("@", 1)[0]


def _uses(job) -> set[str]:
    return {_action(step) for step in job.get("steps", []) if "uses" in step}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_workflow_is_valid_and_its_llmdeploy_flags_exist(path):
    workflow = yaml.safe_load(path.read_text())
    assert workflow.get("jobs"), f"{path.name} has no jobs"
    runs = [step["run"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "run" in step]
    calls = [m.group(1) for run in runs for m in re.finditer(r"llmdeploy ((?:[a-z]+)(?: [^|>\n]*)?)", run)]
    assert calls, f"{path.name} never runs llmdeploy"
    for call in calls:
        words = [w for w in shlex.split(call.replace('"$STACK"', "prod")) if not w.startswith("$")]
        # --help parses the command path and every flag before it; an unknown flag or command fails here.
        result = CliRunner().invoke(cli, [*words, "--help"])
        assert result.exit_code == 0, f"{path.name}: 'llmdeploy {call}' is not a valid command line:\n{result.output}"


# -- pinned actions, no persisted token, least permissions, no injection ------------------------------------------

USES_LINE = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?P<comment>.*)$")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_action_is_pinned_to_a_commit_with_its_release_in_a_comment(path):
    lines = [m for line in path.read_text().splitlines() if (m := USES_LINE.match(line))]
    assert lines, f"{path.name} uses no action"
    for m in lines:
        action, _, ref = m["ref"].partition("@")
        assert re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+", action), m.group(0)
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}: {m['ref']} is not pinned to a full commit SHA"
        assert re.fullmatch(r"\s*#\s*v\d+(\.\d+)*\s*", m["comment"]), (
            f"{path.name}: {m['ref']} needs its release as a comment (`uses: {action}@<sha> # vX.Y.Z`)")


def test_one_action_release_is_pinned_to_one_commit_across_the_examples():
    pins: dict[str, set[str]] = {}
    for path in EXAMPLES:
        for line in path.read_text().splitlines():
            if m := USES_LINE.match(line):
                pins.setdefault(m["ref"].split("@")[0], set()).add(m["ref"].split("@")[1] + m["comment"].strip())
    assert {a: p for a, p in pins.items() if len(p) > 1} == {}


def test_checkouts_keep_no_token():
    steps = [(n, s) for n, _, job in _jobs() for s in job.get("steps", []) if _action(s) == CHECKOUT]
    assert steps
    for name, step in steps:
        assert step.get("with", {}).get("persist-credentials") is False, f"{name}: checkout without persist-credentials: false"


def test_workflows_grant_nothing_by_default_and_jobs_only_what_they_use():
    for name, wf in WORKFLOWS.items():
        assert wf.get("permissions") == {}, f"{name}: top-level `permissions: {{}}`, then per job"
    for name, job_id, job in _jobs():
        perms = job.get("permissions")
        assert isinstance(perms, dict) and perms, f"{name}:{job_id} lists its permissions"
        uses = _uses(job)
        expected = {}
        if CHECKOUT in uses:
            expected["contents"] = "read"
        if AWS_CREDENTIALS in uses:
            expected["id-token"] = "write"
        if PR_COMMENT in uses:
            expected["pull-requests"] = "write"
        assert perms == expected, f"{name}:{job_id}: permissions {perms}, the steps use {expected}"


def test_the_job_that_writes_to_the_pull_request_runs_nothing_from_it():
    comment_jobs = [(n, j) for n, _, j in _jobs() if j["permissions"].get("pull-requests") == "write"]
    assert len(comment_jobs) == 2  # the preview comment and the plan comment
    for name, job in comment_jobs:
        assert [_action(s) for s in job["steps"]] == [PR_COMMENT], f"{name}: a comment job only comments"
        assert "id-token" not in job["permissions"] and not any("secrets." in json.dumps(s) for s in job["steps"])


def test_no_expression_is_expanded_inside_a_run_script():
    # Untrusted event data (titles, branch names, bodies, inputs) reaches scripts only through env:.
    for name, job_id, job in _jobs():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), f"{name}:{job_id}: move the expression into env: ({step['run']!r})"


def test_secrets_reach_only_the_steps_that_use_them():
    for name, wf in WORKFLOWS.items():
        assert "secrets." not in json.dumps(wf.get("env", {})), f"{name}: workflow-level env holds a secret"
        for job_id, job in wf["jobs"].items():
            assert "secrets." not in json.dumps(job.get("env", {})), f"{name}:{job_id}: job-level env holds a secret"
            if "secrets." in json.dumps(job.get("steps", [])):
                assert job.get("environment"), f"{name}:{job_id} reads a secret outside a deployment environment"


def test_pull_request_workflows_never_run_pull_request_code_with_a_writable_token():
    for name, trigger in TRIGGERS.items():
        assert "pull_request_target" not in trigger and "workflow_run" not in trigger, name


def test_examples_install_llmdeploy_from_the_checkout_never_from_pypi():
    # The name `llmdeploy` on PyPI belongs to another project (a Triton service for LLaMA).
    for name, _, job in _jobs():
        for step in job.get("steps", []):
            for cmd in re.findall(r"pip install ([^\n]+)", step.get("run", "")):
                targets = [w for w in shlex.split(cmd) if not w.startswith("-")]
                assert all(t.startswith(".") or t == "pip" for t in targets), f"{name}: pip install {cmd}"


# -- zizmor ---------------------------------------------------------------------------------------------------------

def _zizmor() -> str:
    found = shutil.which("zizmor") or str(Path(sys.executable).with_name("zizmor"))
    if not Path(found).exists():
        pytest.skip("zizmor is not installed: pip install -e '.[dev]'")
    return found


def _audit(*paths) -> subprocess.CompletedProcess:
    # What .ci/run runs: offline audits, any finding of medium severity or higher fails.
    return subprocess.run([_zizmor(), "--offline", "--min-severity", "medium", "--format", "json", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_zizmor_finds_nothing_of_medium_severity_or_higher_in_the_examples():
    result = _audit(*EXAMPLES)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], [(f["ident"], f["determinations"]["severity"]) for f in findings]


def test_zizmor_gate_fails_on_an_unpinned_action_and_a_persisted_token(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text((ROOT / "examples" / "reaper-cron.yml").read_text().replace(
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1\n        with:\n          persist-credentials: false",
        "actions/checkout@v4"))
    result = _audit(bad)
    assert result.returncode != 0
    assert {f["ident"] for f in json.loads(result.stdout)} >= {"unpinned-uses", "artipacked"}


# -- IAM: what each job's role may call ------------------------------------------------------------------------------
#
# IAM actions behind the AWS calls the Pulumi AWS provider (pulumi-aws 7, built on terraform-provider-aws 6) makes for
# each resource type the program registers: create, read (after create and on refresh), update, delete, tags. Read from
# the provider's internal/service/<svc>/*.go (S3 bucket read: HeadBucket + the 12 Get* calls below; VPC data source:
# DescribeVpcs, DescribeVpcAttribute x3, DescribeRouteTables; listener read: DescribeListenerAttributes; security
# group delete: DescribeNetworkInterfaces for lingering ENIs; bucket policy: Put/Get/DeleteBucketPolicy; lifecycle
# configuration: PutBucketLifecycleConfiguration, GetBucketLifecycleConfiguration (it waits until the rules read back),
# DeleteBucketLifecycle; dashboard: PutDashboard on create and update, GetDashboard, DeleteDashboards; topic
# subscription: Subscribe, GetSubscriptionAttributes, SetSubscriptionAttributes, Unsubscribe; group update with
# instance_refresh: StartInstanceRefresh, and when one is running CancelInstanceRefresh + DescribeInstanceRefreshes)
# and, for the calls other services make on the caller's behalf, from AWS's docs: "Amazon EC2 Auto Scaling API
# permissions" (CreateAutoScalingGroup with a launch template: ec2:RunInstances, ec2:CreateTags, iam:PassRole,
# iam:CreateServiceLinkedRole) and Application Auto Scaling's SageMaker integration (register:
# sagemaker:DescribeEndpoint(Config), UpdateEndpointWeightsAndCapacities, the service-linked role; target tracking:
# cloudwatch alarms). Names are IAM actions, not API names (IAM_NAMES below; the Service Authorization Reference says
# which action authorises an API whose name differs, e.g. DeleteBucketLifecycle: s3:PutLifecycleConfiguration).
TAGS_ON_CREATE = "tags passed to Create* need the service's tagging action too"
DEPLOY_ACTIONS: dict[str, set[str]] = {
    "aws:s3/bucket:Bucket": {
        "s3:CreateBucket", "s3:DeleteBucket", "s3:ListBucket",  # ListBucket: HeadBucket (exists, region)
        "s3:GetBucketPolicy", "s3:GetBucketAcl", "s3:GetBucketCORS", "s3:GetBucketWebsite", "s3:GetBucketVersioning",
        "s3:GetAccelerateConfiguration", "s3:GetBucketRequestPayment", "s3:GetBucketLogging",
        "s3:GetLifecycleConfiguration", "s3:GetReplicationConfiguration", "s3:GetEncryptionConfiguration",
        "s3:GetBucketObjectLockConfiguration", "s3:GetBucketTagging", "s3:PutBucketTagging",
        # force_destroy: list and delete every object version before DeleteBucket
        "s3:ListBucketVersions", "s3:DeleteObject", "s3:DeleteObjectVersion",
    },
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": {"s3:PutBucketOwnershipControls", "s3:GetBucketOwnershipControls"},
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": {"s3:PutBucketPublicAccessBlock", "s3:GetBucketPublicAccessBlock"},
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": {
        "s3:PutEncryptionConfiguration", "s3:GetEncryptionConfiguration"},
    "aws:s3/bucketVersioning:BucketVersioning": {"s3:PutBucketVersioning", "s3:GetBucketVersioning"},
    "aws:s3/bucketPolicy:BucketPolicy": {"s3:PutBucketPolicy", "s3:GetBucketPolicy", "s3:DeleteBucketPolicy"},
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": {
        "s3:PutLifecycleConfiguration",  # PutBucketLifecycleConfiguration and DeleteBucketLifecycle
        "s3:GetLifecycleConfiguration"},
    "aws:s3/bucketObjectv2:BucketObjectv2": {
        "s3:PutObject", "s3:PutObjectTagging", "s3:GetObject", "s3:GetObjectTagging", "s3:DeleteObjectTagging",
        # the bucket is versioned: delete removes every version of the key
        "s3:ListBucketVersions", "s3:DeleteObject", "s3:DeleteObjectVersion",
    },
    "aws:iam/role:Role": {
        "iam:CreateRole", "iam:TagRole", "iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy",
        "iam:ListAttachedRolePolicies", "iam:UpdateRole", "iam:UpdateAssumeRolePolicy", "iam:UntagRole",
        "iam:ListInstanceProfilesForRole", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteRole",
    },
    "aws:iam/rolePolicy:RolePolicy": {"iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy"},
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": {
        "iam:AttachRolePolicy", "iam:ListAttachedRolePolicies", "iam:DetachRolePolicy"},
    "aws:iam/instanceProfile:InstanceProfile": {
        "iam:CreateInstanceProfile", "iam:TagInstanceProfile", "iam:GetInstanceProfile", "iam:AddRoleToInstanceProfile",
        "iam:PassRole",  # AddRoleToInstanceProfile passes the role
        "iam:RemoveRoleFromInstanceProfile", "iam:UntagInstanceProfile", "iam:DeleteInstanceProfile",
    },
    "aws:sagemaker/model:Model": {
        "sagemaker:CreateModel", "iam:PassRole", "sagemaker:AddTags", "sagemaker:DescribeModel", "sagemaker:ListTags",
        "sagemaker:DeleteTags", "sagemaker:DeleteModel"},
    "aws:sagemaker/endpointConfiguration:EndpointConfiguration": {
        "sagemaker:CreateEndpointConfig", "sagemaker:AddTags", "sagemaker:DescribeEndpointConfig", "sagemaker:ListTags",
        "sagemaker:DeleteTags", "sagemaker:DeleteEndpointConfig"},
    "aws:sagemaker/endpoint:Endpoint": {
        "sagemaker:CreateEndpoint", "sagemaker:AddTags", "sagemaker:DescribeEndpoint", "sagemaker:ListTags",
        "sagemaker:UpdateEndpoint", "sagemaker:DeleteTags", "sagemaker:DeleteEndpoint"},
    "aws:appautoscaling/target:Target": {
        "application-autoscaling:RegisterScalableTarget", "application-autoscaling:DescribeScalableTargets",
        "application-autoscaling:DeregisterScalableTarget", "application-autoscaling:TagResource",
        "application-autoscaling:UntagResource", "application-autoscaling:ListTagsForResource",
        # what Application Auto Scaling checks the caller may do to a SageMaker variant
        "sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig", "sagemaker:UpdateEndpointWeightsAndCapacities",
        "iam:CreateServiceLinkedRole",  # AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint, first use
    },
    "aws:appautoscaling/policy:Policy": {
        "application-autoscaling:PutScalingPolicy", "application-autoscaling:DescribeScalingPolicies",
        "application-autoscaling:DeleteScalingPolicy",
        # target tracking creates and deletes its CloudWatch alarms with the caller's permissions
        "cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"},
    "aws:cloudwatch/metricAlarm:MetricAlarm": {
        "cloudwatch:PutMetricAlarm", "cloudwatch:TagResource", "cloudwatch:DescribeAlarms",
        "cloudwatch:ListTagsForResource", "cloudwatch:UntagResource", "cloudwatch:DeleteAlarms"},
    # Dashboards take no tags (pulumi-aws 7).
    "aws:cloudwatch/dashboard:Dashboard": {"cloudwatch:PutDashboard", "cloudwatch:GetDashboard", "cloudwatch:DeleteDashboards"},
    "aws:kms/key:Key": {
        "kms:CreateKey", "kms:TagResource", "kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
        "kms:ListResourceTags", "kms:EnableKeyRotation", "kms:UpdateKeyDescription", "kms:UntagResource",
        "kms:ScheduleKeyDeletion"},
    "aws:sns/topic:Topic": {
        "sns:CreateTopic", "sns:TagResource", "sns:GetTopicAttributes", "sns:SetTopicAttributes",
        "sns:ListTagsForResource", "sns:UntagResource", "sns:DeleteTopic"},
    # An e-mail subscription is not confirmed by the provider (the recipient confirms); an unconfirmed one cannot be
    # unsubscribed, which the provider treats as deleted.
    "aws:sns/topicSubscription:TopicSubscription": {
        "sns:Subscribe", "sns:GetSubscriptionAttributes", "sns:SetSubscriptionAttributes", "sns:Unsubscribe"},
    "aws:ec2/securityGroup:SecurityGroup": {
        "ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:DescribeSecurityGroups",
        "ec2:RevokeSecurityGroupEgress",  # drops the default allow-all egress rule before adding ours
        "ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress",
        "ec2:UpdateSecurityGroupRuleDescriptionsIngress", "ec2:UpdateSecurityGroupRuleDescriptionsEgress",
        "ec2:DeleteTags", "ec2:DescribeNetworkInterfaces", "ec2:DeleteSecurityGroup"},
    "aws:ec2/launchTemplate:LaunchTemplate": {
        "ec2:CreateLaunchTemplate", "ec2:CreateTags", "ec2:DescribeLaunchTemplates",
        "ec2:DescribeLaunchTemplateVersions", "ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate",
        "ec2:DeleteTags", "ec2:DeleteLaunchTemplate"},
    "aws:lb/targetGroup:TargetGroup": {
        "elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:AddTags",
        "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
        "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:ModifyTargetGroup",
        "elasticloadbalancing:DescribeTags", "elasticloadbalancing:RemoveTags", "elasticloadbalancing:DeleteTargetGroup"},
    "aws:lb/loadBalancer:LoadBalancer": {
        "elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:AddTags",
        "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
        "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetSecurityGroups",
        "elasticloadbalancing:SetSubnets", "elasticloadbalancing:DescribeTags", "elasticloadbalancing:RemoveTags",
        "elasticloadbalancing:DeleteLoadBalancer",
        "ec2:DescribeNetworkInterfaces",  # waits for the ALB's network interfaces to go after delete
        "iam:CreateServiceLinkedRole",  # AWSServiceRoleForElasticLoadBalancing, first use
    },
    "aws:lb/listener:Listener": {
        "elasticloadbalancing:CreateListener", "elasticloadbalancing:AddTags", "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeListenerAttributes", "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:DescribeTags", "elasticloadbalancing:RemoveTags", "elasticloadbalancing:DeleteListener"},
    "aws:autoscaling/group:Group": {
        "autoscaling:CreateAutoScalingGroup", "autoscaling:CreateOrUpdateTags", "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeScalingActivities", "autoscaling:UpdateAutoScalingGroup",
        "autoscaling:AttachLoadBalancerTargetGroups", "autoscaling:DetachLoadBalancerTargetGroups",
        "autoscaling:DeleteTags", "autoscaling:DeleteAutoScalingGroup",
        # instance_refresh: a new launch template version starts a rolling refresh (cancelling one still running)
        "autoscaling:StartInstanceRefresh", "autoscaling:CancelInstanceRefresh", "autoscaling:DescribeInstanceRefreshes",
        "elasticloadbalancing:DescribeTargetHealth",  # waiting for capacity counts healthy targets
        # what EC2 Auto Scaling checks the caller may do with the launch template
        "ec2:RunInstances", "ec2:CreateTags", "iam:PassRole",
        "iam:CreateServiceLinkedRole",  # AWSServiceRoleForAutoScaling, first use
    },
    # pulumi-random: generated in the provider process, no AWS call (the scaling generation marker).
    "random:index/randomId:RandomId": set(),
}
# Data sources (invokes): called by preview and by up alike.
INVOKE_ACTIONS: dict[str, set[str]] = {
    "aws:index/getCallerIdentity:getCallerIdentity": set(),  # sts:GetCallerIdentity needs no permission
    "aws:ec2/getAmi:getAmi": {"ec2:DescribeImages"},
    "aws:ec2/getVpc:getVpc": {"ec2:DescribeVpcs", "ec2:DescribeVpcAttribute", "ec2:DescribeRouteTables"},
    "aws:ec2/getSubnets:getSubnets": {"ec2:DescribeSubnets"},
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": {"ec2:DescribeInstanceTypeOfferings"},
}
# Pulumi's S3 state backend: a preview only reads (no lock, no history: pkg/backend/diy/backend.go, Preview ->
# apply with DryRun); an update also writes the checkpoint, history, backups and its lock file.
STATE_READ = {"s3:ListBucket", "s3:GetObject"}
STATE_WRITE = STATE_READ | {"s3:PutObject", "s3:DeleteObject"}
# IAM action -> the API operation it authorises, where the names differ (AWS Service Authorization Reference).
IAM_NAMES = {
    "s3:ListBucket": "ListObjectsV2", "s3:GetBucketCORS": "GetBucketCors",
    "s3:GetAccelerateConfiguration": "GetBucketAccelerateConfiguration",
    "s3:GetLifecycleConfiguration": "GetBucketLifecycleConfiguration",
    "s3:PutLifecycleConfiguration": "PutBucketLifecycleConfiguration",
    "s3:GetReplicationConfiguration": "GetBucketReplication", "s3:GetEncryptionConfiguration": "GetBucketEncryption",
    "s3:PutEncryptionConfiguration": "PutBucketEncryption",
    "s3:GetBucketObjectLockConfiguration": "GetObjectLockConfiguration",
    "s3:GetBucketPublicAccessBlock": "GetPublicAccessBlock", "s3:PutBucketPublicAccessBlock": "PutPublicAccessBlock",
    "s3:ListBucketVersions": "ListObjectVersions", "s3:DeleteObjectVersion": "DeleteObject",
    "iam:PassRole": None,  # a permission, not an API: checked when SageMaker / EC2 receive the role
}
BOTOCORE_SERVICE = {"elasticloadbalancing": "elbv2"}
# `pulumi up`'s role gets its permissions from several managed policies: one would exceed IAM's 6,144-character
# limit. Global ones (the state and artifact buckets, the stack's IAM roles) and those held to the stack's region.
DEPLOY_POLICIES = ("github-actions-pulumi-deploy-global.json", "github-actions-pulumi-deploy-regional.json")
PREVIEW_POLICY = "github-actions-pulumi-preview.json"
POLICIES = (*DEPLOY_POLICIES, PREVIEW_POLICY)
# IAM quotas: a managed policy holds at most 6,144 characters (whitespace not counted); a role can have 10 managed
# policies attached by default.
MANAGED_POLICY_CHARS, MANAGED_POLICIES_PER_ROLE = 6144, 10


def _registered():
    """Resource types and invokes the program registers in every mode (and with HTTPS, weights in S3 and an alarm
    e-mail)."""
    from tests.infra import mocks

    runs = [mocks.run_mode(mode) for mode in mocks.MODES]
    runs.append(mocks.run(mocks.stack_config(
        "reserved", certificate_arn="arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d",
        weights_uri="s3://weights-bucket/flan-t5-xl/", alarm_email="oncall@example.com"), stack="test-reserved-https"))
    types = {r.type for m in runs for r in m.resources if r.custom}
    invokes = {token for m in runs for token, _ in m.calls}
    names = {(r.type, r.name) for m in runs for r in m.resources if r.custom}
    return types, invokes, names


def _policy(name: str) -> dict:
    return json.loads((IAM_DIR / name).read_text())


def _deploy_policy() -> dict:
    """What the deploy role may do: the statements of all its managed policies (their Sids are unique)."""
    statements = [s for name in DEPLOY_POLICIES for s in _policy(name)["Statement"]]
    sids = [s["Sid"] for s in statements]
    assert len(sids) == len(set(sids)), f"a Sid is in two deploy policies: {sids}"
    return {"Statement": statements}


def _actions(statements) -> set[str]:
    return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def _statement(policy: dict, sid: str) -> dict:
    found = [s for s in policy["Statement"] if s.get("Sid") == sid]
    assert len(found) == 1, f"no statement {sid}"
    return found[0]


def test_every_resource_type_and_data_source_the_program_uses_has_its_calls_listed():
    types, invokes, _ = _registered()
    assert types == set(DEPLOY_ACTIONS), "a resource type was added or removed: list its calls in DEPLOY_ACTIONS"
    assert invokes == set(INVOKE_ACTIONS), "a data source was added or removed: list its calls in INVOKE_ACTIONS"


def test_deploy_policy_covers_exactly_the_calls_pulumi_up_makes():
    policy = _deploy_policy()
    state = _statement(policy, "PulumiStateList"), _statement(policy, "PulumiStateObjects")
    program = [s for s in policy["Statement"] if s not in state]
    assert _actions(program) == set().union(*DEPLOY_ACTIONS.values(), *INVOKE_ACTIONS.values())
    assert _actions(state) == STATE_WRITE
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])


def test_preview_policy_only_reads():
    policy = _policy(PREVIEW_POLICY)
    state = _statement(policy, "PulumiStateList"), _statement(policy, "PulumiStateObjects")
    program = [s for s in policy["Statement"] if s not in state]
    # A preview registers nothing: the provider configures (sts) and the data sources run; Create/Read/Update/Delete
    # of resources happen only in `up`.
    assert _actions(program) == set().union(*INVOKE_ACTIONS.values())
    assert _actions(state) == STATE_READ
    assert all(re.match(r"^[a-z0-9-]+:(Describe|Get|List)", a) for a in _actions(policy["Statement"]))


def test_deploy_policy_names_the_programs_own_buckets_and_roles():
    """Resource patterns match Pulumi's auto-names (logical name + '-' + random suffix) of what the program creates."""
    _, _, names = _registered()
    policy = _deploy_policy()
    by_type = {}
    for typ, name in names:
        by_type.setdefault(typ, set()).add(name)
    bucket = _statement(policy, "ModelArtifactBucket")["Resource"]
    assert bucket == [f"arn:aws:s3:::{n}-*" for n in sorted(by_type["aws:s3/bucket:Bucket"])] + [
        f"arn:aws:s3:::{n}-*/*" for n in sorted(by_type["aws:s3/bucket:Bucket"])]
    roles = [f"arn:aws:iam::ACCOUNT_ID:role/{n}-*" for n in sorted(by_type["aws:iam/role:Role"])]
    profiles = [f"arn:aws:iam::ACCOUNT_ID:instance-profile/{n}-*"
                for n in sorted(by_type["aws:iam/instanceProfile:InstanceProfile"])]
    assert _statement(policy, "ServeRoles")["Resource"] == roles + profiles
    assert _statement(policy, "PassServeRoles")["Resource"] == roles
    from llmdeploy.infra.iam import SSM_CORE_POLICY

    managed = _statement(policy, "AttachOnlySessionManagerPolicy")
    assert managed["Condition"] == {"ArnEquals": {"iam:PolicyARN": SSM_CORE_POLICY.format(partition="aws")}}
    linked = _statement(policy, "ServiceLinkedRoles")["Condition"]["StringEquals"]["iam:AWSServiceName"]
    assert sorted(linked) == ["autoscaling.amazonaws.com", "elasticloadbalancing.amazonaws.com",
                              "sagemaker.application-autoscaling.amazonaws.com"]


@pytest.mark.parametrize("name", POLICIES)
def test_policy_actions_exist_in_the_aws_service_models(name):
    """Every action is a real IAM action: its API operation is in botocore's service model (bundled with boto3)."""
    import botocore.session

    session = botocore.session.get_session()
    operations: dict[str, set[str]] = {}
    for action in _actions(_policy(name)["Statement"]):
        prefix, _, op = action.partition(":")
        op = IAM_NAMES.get(action, op)
        if op is None:
            continue
        service = BOTOCORE_SERVICE.get(prefix, prefix)
        if service not in operations:
            operations[service] = set(session.get_service_model(service).operation_names)
        assert op in operations[service], f"{name}: {action} names no {service} operation"


def test_github_actions_pulumi_uses_the_read_only_role_for_previews_and_the_deploy_role_for_up():
    wf = WORKFLOWS["github-actions-pulumi.yml"]
    header = (ROOT / "examples" / "github-actions-pulumi.yml").read_text()
    roles = {job_id: [s["with"]["role-to-assume"] for s in job["steps"] if _action(s) == AWS_CREDENTIALS]
             for job_id, job in wf["jobs"].items()}
    assert roles == {"preview": ["${{ vars.AWS_PREVIEW_ROLE_ARN }}"], "comment": [], "up": ["${{ vars.AWS_ROLE_ARN }}"]}
    assert {wf["jobs"]["preview"]["environment"], wf["jobs"]["up"]["environment"]} == {"preview", "production"}
    for policy in POLICIES:
        assert f"examples/iam/{policy}" in header and (IAM_DIR / policy).exists()
    assert sorted(p.name for p in IAM_DIR.glob("github-actions-pulumi-*.json")) == sorted(POLICIES), \
        "every policy file in examples/iam is one the workflow's roles attach"


def test_plan_comment_needs_no_aws_role_and_no_secret():
    text = (ROOT / "examples" / "plan-pr-comment.yml").read_text()
    wf = WORKFLOWS["plan-pr-comment.yml"]
    assert "IAM policy: none" in text and "secrets." not in text
    assert all(AWS_CREDENTIALS not in _uses(job) and "id-token" not in job["permissions"] for job in wf["jobs"].values())


@pytest.mark.parametrize("name", POLICIES)
def test_policy_fits_a_managed_policy(name):
    # IAM quota: a managed policy holds at most 6,144 characters, whitespace not counted.
    text = json.dumps(_policy(name), separators=(",", ":"))
    assert len(text) <= MANAGED_POLICY_CHARS, f"{name} is {len(text)} characters: split it (see DEPLOY_POLICIES)"
    assert len(DEPLOY_POLICIES) <= MANAGED_POLICIES_PER_ROLE
    # Everything outside IAM and the two S3 buckets stays in the stack's region.
    for statement in _policy(name)["Statement"]:
        if statement["Resource"] == ["*"] and statement["Sid"] != "ServiceLinkedRoles":
            assert statement["Condition"] == {"StringEquals": {"aws:RequestedRegion": "REGION"}}, statement["Sid"]
