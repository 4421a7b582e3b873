"""The llmdeploy Pulumi program (Pulumi.yaml: ``main: infra/``).

It only reads the stack config ``llmdeploy plan --stack NAME`` wrote, validates
it against the catalog, and wires the components for the chosen mode. Every
check (mode, serverless limits, instance type in the region, the budget
``maxMonthlyUsd``, LMI version, the model artifact build) runs before the first
resource is registered, so bad input or a stack over its budget creates nothing
and reads as one line, not a traceback. The monthly estimate is a stack output.

``main()`` is also what ``llmdeploy preview --offline`` and the tests run under
Pulumi's mock runtime (llmdeploy.infra.offline_preview).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pulumi

from llmdeploy import budget
from llmdeploy.catalog import load_catalog
from llmdeploy.enums import Mode
from llmdeploy.errors import LlmdeployError
from llmdeploy.stackconfig import BY_KEY, NAMESPACE, SETTINGS, StackConfig
from llmdeploy.tags import base_tags


def read_config() -> StackConfig:
    """The stack's ``llmdeploy:*`` settings, validated (ConfigError / UnknownChoiceError on bad input).

    ``pulumi.Config`` can only look keys up; a mistyped key is found in the whole config map, which
    Pulumi's Python language host hands the program as the ``PULUMI_CONFIG`` environment variable
    (read with the public ``pulumi.runtime.get_config_env``). Inline Automation API programs get
    their config another way; ``llmdeploy deploy`` has validated the stack file before running them.
    """
    cfg = pulumi.Config(NAMESPACE)
    raw = {s.key: _structured(value) for s in SETTINGS if (value := cfg.get(s.key)) is not None}
    if (provider_region := pulumi.Config("aws").get("region")) is not None:
        raw["aws:region"] = provider_region  # from_mapping refuses a stack whose two regions disagree
    for key in pulumi.runtime.get_config_env():
        ns, _, bare = key.partition(":")
        if ns == NAMESPACE and bare not in BY_KEY:
            raw[bare] = ""  # from_mapping names the unknown setting and the valid ones
    return StackConfig.from_mapping(raw, catalog=load_catalog(), origin=f"stack {pulumi.get_stack()!r} config")


def _structured(value: str):
    """Pulumi hands a YAML list or map over as its JSON text: give from_mapping the list, which it refuses by name."""
    if value[:1] in ("[", "{"):
        import json

        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def build_dir(stack: str) -> Path:
    """Where model.tar.gz is built; it must outlive the program (the engine uploads it afterwards)."""
    base = os.environ.get("LLMDEPLOY_BUILD_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llmdeploy", "build")
    return Path(base) / stack


def main(*, artifact_dir: str | os.PathLike | None = None) -> dict[str, pulumi.Output]:
    from llmdeploy import monitoring as mon
    from llmdeploy.infra import lmi_image
    from llmdeploy.infra.artifact import ModelArtifact, ModelArtifactArgs, build_tarball

    config = read_config()
    stack = pulumi.get_stack()
    # The budget first: over it, the program fails here, before a single resource is registered.
    monthly_usd = budget.check_stack(config, load_catalog(), stack=stack, origin=f"stack {stack!r} config")
    # Resolve everything that can fail before registering anything. Every mode serves the same
    # model.tar.gz in an LMI-family image: the GPU build, or its CPU build for serverless.
    serverless = config.mode == Mode.SERVERLESS
    if serverless:
        image = lmi_image.serverless_image(config.region, config.lmi_version, config.lmi_image)
        inference_ami = ""  # no instances to pick an AMI for
    else:
        image = lmi_image.lmi_image(config.region, config.lmi_version, config.lmi_image)
        inference_ami = lmi_image.inference_ami_version(config.lmi_version, image)
    tarball, sha256 = build_tarball(config, artifact_dir or build_dir(stack), load_catalog())
    if note := lmi_image.requirements_warning(config.lmi_version, image):
        pulumi.log.warn(note)
    tags = base_tags(stack=stack, mode=config.mode, owner=config.owner, cost_center=config.cost_center)
    targets = mon.targets_for(config, load_catalog())  # alarm thresholds: what the plan recorded

    artifact = ModelArtifact("model", ModelArtifactArgs(tarball=tarball, sha256=sha256, tags=tags,
                                                        weights_uri=config.weights_uri))
    outputs: dict[str, pulumi.Output] = {"mode": pulumi.Output.from_input(config.mode),
                                          "model_data_url": artifact.model_data_url,
                                          "image": pulumi.Output.from_input(image)}
    if config.mode == Mode.RESERVED:
        from llmdeploy.infra.reserved_endpoint import ReservedEndpoint, ReservedEndpointArgs

        reserved = ReservedEndpoint("serve", ReservedEndpointArgs(
            region=config.region, image=image, model_data_url=artifact.model_data_url, bucket_arn=artifact.bucket_arn,
            instance_type=config.instance_type, instance_count=config.instance_count,
            min_instances=config.min_instances, service_port=config.service_port,
            weights_uri=config.weights_uri, ingress_cidr=config.ingress_cidr, certificate_arn=config.certificate_arn,
            agent_config=json.dumps(mon.agent_config(stack), indent=2), tags=tags))
        outputs.update(url=reserved.url, invoke_command=reserved.invoke_command)
        dimensions: dict[str, pulumi.Input[str]] = {
            mon.LOAD_BALANCER: reserved.load_balancer_arn_suffix, mon.TARGET_GROUP: reserved.target_group_arn_suffix,
            mon.STACK: stack}
    else:
        from llmdeploy.infra.sagemaker_endpoint import VARIANT, SageMakerEndpoint, SageMakerEndpointArgs

        endpoint = SageMakerEndpoint("serve", SageMakerEndpointArgs(
            mode=config.mode, region=config.region, image=image,
            bucket_name=artifact.bucket_name, bucket_arn=artifact.bucket_arn,
            model_data_url=artifact.model_data_url, inference_ami_version=inference_ami,
            weights_uri=config.weights_uri,
            instance_type=config.instance_type, instance_count=config.instance_count,
            min_instances=config.min_instances,
            target_invocations_per_instance=config.target_invocations_per_instance,
            serverless_memory_mb=config.serverless_memory_mb,
            serverless_max_concurrency=config.serverless_max_concurrency,
            serverless_provisioned_concurrency=config.serverless_provisioned_concurrency,
            async_max_concurrent_invocations=config.async_max_concurrent_invocations,
            tags=tags))
        outputs.update(endpoint_name=endpoint.endpoint_name, invoke_command=endpoint.invoke_command)
        dimensions = {mon.ENDPOINT: endpoint.endpoint_name, mon.VARIANT: VARIANT}
    from llmdeploy.infra.monitoring import Monitoring, MonitoringArgs

    monitor = Monitoring("monitor", MonitoringArgs(
        stack=stack, region=config.region, targets=targets, dimensions=dimensions, alarm_email=config.alarm_email,
        alarm_topic_arn=config.alarm_topic_arn, tags=tags))
    outputs.update(dashboard_url=monitor.dashboard_url, alarm_topic_arn=monitor.topic_arn)
    outputs["monthly_estimate_usd"] = pulumi.Output.from_input(round(monthly_usd, 2))  # what `destroy` says stops
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs


if __name__ == "__main__":  # run by the Pulumi language host (runpy, run_name="__main__")
    try:
        main()
    except LlmdeployError as exc:
        # One line in Pulumi's diagnostics instead of a Python traceback.
        raise pulumi.RunError(str(exc)) from None
