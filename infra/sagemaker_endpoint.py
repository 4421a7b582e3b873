"""A SageMaker endpoint in one of three modes: realtime, async or serverless.

- realtime: instances always on; target tracking on invocations per instance
  between minInstances and instanceCount.
- async: requests queue in S3 and results land in the artifact bucket (KMS
  encrypted), with SNS success/error topics. Target tracking on
  ApproximateBacklogSizePerInstance between minInstances and instanceCount; at
  minInstances 0 it scales to zero, and since target tracking cannot leave 0
  instances (no instance, no per-instance metric), a step policy driven by a
  HasBacklogWithoutCapacity alarm adds the first instance. This is the pattern of
  SageMaker's "Autoscale an asynchronous endpoint" guide.
- serverless: no instances; memory and concurrency from the stack (validated
  against the catalog's limits before this runs), the LMI family's CPU image.

Every mode's Model is the same: an LMI-family image with our model.tar.gz as its
model data. Instance-backed variants whose image needs a newer NVIDIA driver than
SageMaker's default hosts get ``inference_ami_version`` (llmdeploy/data/lmi.toml).

Second deploys. The Model names a content-addressed artifact (infra/artifact.py), so
any change to it replaces the Model and the endpoint config (both auto-named), and
the endpoint moves to the new config with SageMaker's blue/green update. An instance
type change needs more: AWS rejects UpdateEndpoint while the variant is a registered
scalable target whose instance type changes ("Update endpoints that use auto
scaling", https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html:
delete the policies and deregister the target, update, then register again). A
``random.RandomId`` keyed on the variant's instance type stands for "the scaling
registration of this instance type": it is replaced delete-before-replace, and the
scalable target's ``resource_id`` (replace-on-change in the provider) depends on it,
so Pulumi deletes the policies and the target, then the old marker, before it
creates the new marker; the endpoint depends on the marker, so its update waits for
that, and the target and policies are registered again once the update is done.
A model-only change keeps the target registered, as AWS allows.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from llmdeploy.enums import Mode
from llmdeploy.infra import iam
from llmdeploy.infra.artifact import ARTIFACT_PREFIX, ASYNC_FAILURE_PREFIX, ASYNC_INPUT_PREFIX, ASYNC_OUTPUT_PREFIX
from llmdeploy.infra.lmi_image import ecr_repository_arn
from llmdeploy.responses import check_body_command
from llmdeploy.stackconfig import partition

SAGEMAKER_MODES = tuple(mode for mode in Mode if mode.on_sagemaker)
VARIANT = "AllTraffic"
SAMPLE_BODY = '{"inputs": "Translate to German: How old are you?"}'
# LMI loads multi-GB weights before answering /ping: give it the 10 minutes it may need.
STARTUP_TIMEOUT_S = 600


@dataclass
class SageMakerEndpointArgs:
    mode: Mode  # realtime | async | serverless
    region: str
    image: str
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    model_data_url: pulumi.Input[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    # ProductionVariant InferenceAmiVersion (driver/CUDA of the hosts); "" = SageMaker's default hosts.
    inference_ami_version: str = ""
    weights_uri: str = ""
    instance_type: str = ""
    instance_count: int = 1
    min_instances: int = 1
    target_invocations_per_instance: int = 60
    serverless_memory_mb: int = 6144
    serverless_max_concurrency: int = 20
    serverless_provisioned_concurrency: int = 0
    async_max_concurrent_invocations: int = 4
    tags: dict[str, str] = field(default_factory=dict)


class SageMakerEndpoint(pulumi.ComponentResource):
    endpoint_name: pulumi.Output[str]
    invoke_command: pulumi.Output[str]

    def __init__(self, name: str, args: SageMakerEndpointArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmdeploy:sagemaker:Endpoint", name, None, opts)
        if args.mode not in SAGEMAKER_MODES:
            raise ValueError(f"SageMakerEndpoint mode must be {', '.join(SAGEMAKER_MODES)}, got '{args.mode}'")
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)

        key = topics = None
        if args.mode == Mode.ASYNC:
            key, topics = self._async_notifications(child)

        role, policy = self._execution_role(key, topics)
        container: aws.sagemaker.ModelPrimaryContainerArgsDict = {"image": args.image, "environment": args.environment}
        if args.model_data_url is not None:
            container["model_data_url"] = args.model_data_url
        model = aws.sagemaker.Model(
            f"{name}-model",
            execution_role_arn=role.arn,
            primary_container=container,
            tags=args.tags,
            # SageMaker checks the role can read the model and pull the image when the model is created.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        config = aws.sagemaker.EndpointConfiguration(
            f"{name}-config",
            production_variants=[self._variant(model)],
            async_inference_config=self._async_config(key, topics) if args.mode == Mode.ASYNC else None,
            tags=args.tags,
            opts=child,
        )
        scaled = args.mode in (Mode.REALTIME, Mode.ASYNC)
        generation = self._scaling_generation() if scaled else None
        endpoint = aws.sagemaker.Endpoint(
            f"{name}-endpoint", endpoint_config_name=config.name, tags=args.tags,
            # The update waits for the old scalable target to be gone (see the module docstring).
            opts=pulumi.ResourceOptions(parent=self, depends_on=[generation] if generation else None),
        )

        if args.mode == Mode.REALTIME:
            self._realtime_scaling(endpoint, generation)
        elif args.mode == Mode.ASYNC:
            self._async_scaling(endpoint, generation)

        self.endpoint_name = endpoint.name
        self.invoke_command = endpoint.name.apply(self._invoke_command) if args.mode != Mode.ASYNC else pulumi.Output.all(
            endpoint.name, args.bucket_name).apply(lambda v: self._invoke_command(v[0], v[1]))
        outputs = {"endpoint_name": self.endpoint_name, "invoke_command": self.invoke_command}
        if args.mode == Mode.ASYNC:
            outputs["output_location"] = pulumi.Output.concat("s3://", args.bucket_name, "/", ASYNC_OUTPUT_PREFIX)
        self.register_outputs(outputs)

    # -- pieces ---------------------------------------------------------------------------------

    def _execution_role(self, key, topics):
        args, name = self._args, self._name
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=account.apply(lambda a: iam.assume_role_policy("sagemaker.amazonaws.com", a)),
            description="llmdeploy SageMaker execution role (least privilege)",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        part = partition(args.region)
        is_async = args.mode == Mode.ASYNC
        policy_doc = pulumi.Output.all(
            args.bucket_arn, account,
            key.arn if key else None,
            topics[0].arn if topics else None, topics[1].arn if topics else None,
        ).apply(lambda v: iam.to_json(iam.sagemaker_execution_policy(
            bucket_arn=v[0],
            read_prefixes=[ARTIFACT_PREFIX] + ([ASYNC_INPUT_PREFIX] if is_async else []),
            log_group_arn_prefix=f"arn:{part}:logs:{args.region}:{v[1]}:log-group:/aws/sagemaker/Endpoints/",
            ecr_repository_arn=ecr_repository_arn(args.image),
            weights_uri=args.weights_uri,
            partition=part,
            output_prefixes=[ASYNC_OUTPUT_PREFIX, ASYNC_FAILURE_PREFIX] if is_async else [],
            topic_arns=[a for a in v[3:5] if a],
            kms_key_arn=v[2],
        )))
        policy = aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=policy_doc, opts=pulumi.ResourceOptions(parent=self))
        return role, policy

    def _variant(self, model) -> aws.sagemaker.EndpointConfigurationProductionVariantArgsDict:
        args = self._args
        variant: aws.sagemaker.EndpointConfigurationProductionVariantArgsDict = {"variant_name": VARIANT, "model_name": model.name}
        if args.mode == Mode.SERVERLESS:
            serverless: aws.sagemaker.EndpointConfigurationProductionVariantServerlessConfigArgsDict = {
                "memory_size_in_mb": args.serverless_memory_mb, "max_concurrency": args.serverless_max_concurrency}
            if args.serverless_provisioned_concurrency > 0:
                serverless["provisioned_concurrency"] = args.serverless_provisioned_concurrency
            variant["serverless_config"] = serverless
        else:
            variant["instance_type"] = args.instance_type
            # SageMaker needs at least one instance at creation, even for async (min 0 comes from autoscaling).
            variant["initial_instance_count"] = args.instance_count
            variant["container_startup_health_check_timeout_in_seconds"] = STARTUP_TIMEOUT_S
            variant["model_data_download_timeout_in_seconds"] = STARTUP_TIMEOUT_S
            if args.inference_ami_version:
                variant["inference_ami_version"] = args.inference_ami_version
        return variant

    def _async_notifications(self, child):
        name, args = self._name, self._args
        key = aws.kms.Key(
            f"{name}-key",
            description="llmdeploy async inference results and notifications",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            tags=args.tags,
            opts=child,
        )
        success = aws.sns.Topic(f"{name}-success", kms_master_key_id=key.arn, tags=args.tags, opts=child)
        error = aws.sns.Topic(f"{name}-error", kms_master_key_id=key.arn, tags=args.tags, opts=child)
        return key, (success, error)

    def _async_config(self, key, topics) -> aws.sagemaker.EndpointConfigurationAsyncInferenceConfigArgsDict:
        args = self._args
        success, error = topics
        return {
            "output_config": {
                "s3_output_path": pulumi.Output.concat("s3://", args.bucket_name, "/", ASYNC_OUTPUT_PREFIX),
                "s3_failure_path": pulumi.Output.concat("s3://", args.bucket_name, "/", ASYNC_FAILURE_PREFIX),
                "kms_key_id": key.arn,
                "notification_config": {
                    "success_topic": success.arn,
                    "error_topic": error.arn,
                    "include_inference_response_ins": ["SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"],
                },
            },
            "client_config": {"max_concurrent_invocations_per_instance": args.async_max_concurrent_invocations},
        }

    def _scaling_generation(self) -> random.RandomId:
        """Replaced (delete first) when the variant's instance type changes; the scalable target depends on it."""
        return random.RandomId(
            f"{self._name}-scaling-generation",
            byte_length=4,
            keepers={"instance_type": self._args.instance_type, "variant": VARIANT},
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

    def _scalable_target(self, endpoint, generation, min_capacity: int):
        args, name = self._args, self._name
        # resource_id is built from the endpoint's name (the variant exists only once the endpoint does) and
        # depends on the scaling generation: a new instance type deletes this target before the endpoint update.
        resource_id = pulumi.Output.all(endpoint.name, generation.hex).apply(
            lambda v: f"endpoint/{v[0]}/variant/{VARIANT}")
        return aws.appautoscaling.Target(
            f"{name}-scaling-target",
            service_namespace="sagemaker",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            resource_id=resource_id,
            min_capacity=min_capacity,
            max_capacity=args.instance_count,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[endpoint]),
        )

    def _realtime_scaling(self, endpoint, generation) -> None:
        args = self._args
        target = self._scalable_target(endpoint, generation, args.min_instances)
        aws.appautoscaling.Policy(
            f"{self._name}-invocations-policy",
            policy_type="TargetTrackingScaling",
            service_namespace=target.service_namespace,
            scalable_dimension=target.scalable_dimension,
            resource_id=target.resource_id,
            target_tracking_scaling_policy_configuration={
                "target_value": float(args.target_invocations_per_instance),
                "predefined_metric_specification": {"predefined_metric_type": "SageMakerVariantInvocationsPerInstance"},
                "scale_out_cooldown": 60,
                "scale_in_cooldown": 300,
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _async_scaling(self, endpoint, generation) -> None:
        args, name = self._args, self._name
        # minInstances is the floor; only at 0 does the endpoint scale to zero (and need the from-zero step policy).
        target = self._scalable_target(endpoint, generation, args.min_instances)
        common = dict(service_namespace=target.service_namespace, scalable_dimension=target.scalable_dimension,
                      resource_id=target.resource_id)
        aws.appautoscaling.Policy(
            f"{name}-backlog-policy",
            policy_type="TargetTrackingScaling",
            target_tracking_scaling_policy_configuration={
                # Queue depth each instance should carry: its concurrent invocations.
                "target_value": float(args.async_max_concurrent_invocations),
                "customized_metric_specification": {
                    "metric_name": "ApproximateBacklogSizePerInstance",
                    "namespace": "AWS/SageMaker",
                    "dimensions": [{"name": "EndpointName", "value": endpoint.name}],
                    "statistic": "Average",
                },
                "scale_in_cooldown": 600,
                "scale_out_cooldown": 120,
            },
            opts=pulumi.ResourceOptions(parent=self),
            **common,
        )
        if args.min_instances > 0:
            return
        from_zero = aws.appautoscaling.Policy(
            f"{name}-from-zero-policy",
            policy_type="StepScaling",
            step_scaling_policy_configuration={
                "adjustment_type": "ChangeInCapacity",
                "metric_aggregation_type": "Average",
                "cooldown": 300,
                "step_adjustments": [{"metric_interval_lower_bound": "0", "scaling_adjustment": 1}],
            },
            opts=pulumi.ResourceOptions(parent=self),
            **common,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-backlog-without-capacity",
            alarm_description="Requests are queued and no instance is running: add one (scale up from zero).",
            namespace="AWS/SageMaker",
            metric_name="HasBacklogWithoutCapacity",
            dimensions={"EndpointName": endpoint.name},
            statistic="Average",
            period=60,
            evaluation_periods=1,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="missing",
            alarm_actions=[from_zero.arn],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _invoke_command(self, endpoint_name: str, bucket: str | None = None) -> str:
        region = self._args.region
        if self._args.mode == Mode.ASYNC:
            input_uri = f"s3://{bucket}/{ASYNC_INPUT_PREFIX}request.json"
            # The result lands at the printed OutputLocation; like any response it may hold {"error", "code"}.
            return (
                f"echo {shlex.quote(SAMPLE_BODY)} > request.json && aws s3 cp request.json {input_uri} && "
                f"aws sagemaker-runtime invoke-endpoint-async --region {region} --endpoint-name {endpoint_name} "
                f"--content-type application/json --input-location {input_uri}"
            )
        # DJL answers a request batched with a malformed one with status 200 and an error body: check the body.
        return (
            f"aws sagemaker-runtime invoke-endpoint --region {region} --endpoint-name {endpoint_name} "
            f"--content-type application/json --cli-binary-format raw-in-base64-out "
            f"--body {shlex.quote(SAMPLE_BODY)} response.json >/dev/null && {check_body_command('response.json')}"
        )

