"""The LMI image per mode, resolved offline with sagemaker-core at the pinned version, and its host AMI."""

import re

import pytest

from llmdeploy.errors import ConfigError
from llmdeploy.infra import lmi_image
from llmdeploy.lmi import cuda_of_tag, load_lmi_table
from llmdeploy.stackconfig import DEFAULT_LMI_VERSION

from .mocks import MODES, one, run, run_mode, stack_config

PINNED_US_EAST_1 = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.36.0-lmi27.0.0-cu130"
CPU_US_EAST_1 = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.36.0-cpu-full"
GPU_4_1 = "al2023-ami-sagemaker-inference-gpu-4-1"


def _sagemaker_shape(name: str):
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker").shape_for(name)


def test_pinned_version_is_known_to_sagemaker_core():
    assert DEFAULT_LMI_VERSION in lmi_image.lmi_versions(), "the pinned LMI version must be one sagemaker-core knows"


def test_pin_is_the_newest_version_whose_recipe_was_read():
    table = load_lmi_table()
    readable = [v for v in lmi_image.lmi_versions() if v in table.versions]
    assert DEFAULT_LMI_VERSION == table.default == readable[0], "pin the newest LMI whose libraries are recorded"
    newer = [v for v in lmi_image.lmi_versions() if lmi_image._version_key(v) > lmi_image._version_key(table.default)]
    assert all(lmi_image.requirements_warning(v, lmi_image.lmi_image("us-east-1", v)) for v in newer), \
        "a newer, unrecorded version must come with a warning"


@pytest.mark.parametrize("version", sorted(load_lmi_table().versions))
def test_recorded_tags_are_what_sagemaker_core_resolves(version):
    rel = load_lmi_table().versions[version]
    uri = lmi_image.lmi_image("us-east-1", version)
    assert uri.endswith(":" + rel.image_tag), f"lmi.toml's tag for {version} must be sagemaker-core's"
    assert cuda_of_tag(uri) == rel.cuda, "the recorded CUDA must be the one the tag names"
    assert lmi_image.requirements_warning(version, uri) is None


def test_pinned_lmi_image_uri_for_us_east_1():
    assert lmi_image.lmi_image("us-east-1", DEFAULT_LMI_VERSION) == PINNED_US_EAST_1


def test_lmi_image_override_wins():
    assert lmi_image.lmi_image("us-east-1", "0.0.0", "123.dkr.ecr.us-east-1.amazonaws.com/mine:1") == (
        "123.dkr.ecr.us-east-1.amazonaws.com/mine:1")


def test_unknown_version_names_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        lmi_image.lmi_image("us-east-1", "0.99.0")
    assert "0.99.0" in str(err.value) and DEFAULT_LMI_VERSION in str(err.value), "the error must list valid versions"


def test_serverless_runs_the_cpu_build_of_the_same_family():
    assert lmi_image.serverless_image("us-east-1", DEFAULT_LMI_VERSION) == CPU_US_EAST_1
    gpu = lmi_image.lmi_image("eu-west-1", DEFAULT_LMI_VERSION)
    assert lmi_image.serverless_image("eu-west-1", DEFAULT_LMI_VERSION) == gpu.rsplit(":", 1)[0] + ":0.36.0-cpu-full", \
        "the CPU tag lives in the LMI image's repository, in every region"
    with pytest.raises(ConfigError, match="no CPU build of LMI 0.33.0.*0.35.0, 0.36.0"):
        lmi_image.serverless_image("us-east-1", "0.33.0")


def test_ecr_repository_arn():
    assert lmi_image.ecr_repository_arn(PINNED_US_EAST_1) == "arn:aws:ecr:us-east-1:763104351884:repository/djl-inference"
    assert lmi_image.ecr_repository_arn("docker.io/library/nginx:1") is None


@pytest.mark.parametrize("mode", ["realtime", "async"])
def test_sagemaker_model_runs_the_pinned_lmi_image_and_our_artifact(mode):
    model = one(run_mode(mode), "aws:sagemaker/model:Model")
    assert model.inputs["primaryContainer"]["image"] == PINNED_US_EAST_1
    assert model.inputs["primaryContainer"]["modelDataUrl"].endswith("/model.tar.gz")
    assert not model.inputs["primaryContainer"].get("environment"), "the weights location lives in serving.properties"


@pytest.mark.parametrize("mode", ["realtime", "async"])
def test_cuda_13_image_gets_a_host_ami_with_its_driver(mode):
    (variant,) = one(run_mode(mode), "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
    assert variant["inferenceAmiVersion"] == GPU_4_1, "CUDA 13.0 does not run on the default driver 470 hosts"


def test_inference_ami_follows_the_image_cuda():
    assert lmi_image.inference_ami_version("0.36.0", PINNED_US_EAST_1) == GPU_4_1
    assert lmi_image.inference_ami_version("0.33.0", lmi_image.lmi_image("us-east-1", "0.33.0")) == "", \
        "CUDA 12.8 runs on the default hosts through the image's cuda-compat package"
    assert lmi_image.inference_ami_version("0.36.0", "123.dkr.ecr.us-east-1.amazonaws.com/mine:x-cu130") == GPU_4_1
    assert lmi_image.inference_ami_version("0.36.0", "123.dkr.ecr.us-east-1.amazonaws.com/mine:latest") == ""


def test_recorded_amis_are_the_sagemaker_api_enum_with_its_documented_drivers():
    """lmi.toml's AMIs against botocore's ProductionVariantInferenceAmiVersion enum and its documentation."""
    enum = set(_sagemaker_shape("ProductionVariantInferenceAmiVersion").enum)
    doc = _sagemaker_shape("ProductionVariant").members["InferenceAmiVersion"].documentation
    for name, ami in load_lmi_table().hosts.inference_amis.items():
        assert name in enum, f"{name} is not an InferenceAmiVersion the SageMaker API accepts"
        section = doc.split(f"<dt>{name}</dt>", 1)[1].split("</dd>", 1)[0]
        assert re.search(rf"NVIDIA driver version: {ami.driver}\b", section), name
        assert re.search(rf"CUDA version: {re.escape(ami.cuda)}\b", section), name


def test_older_pinned_version_runs_on_default_hosts():
    mocks = run(stack_config("realtime", lmi_version="0.33.0"), stack="lmi-033")
    (variant,) = one(mocks, "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
    assert "inferenceAmiVersion" not in variant
    assert one(mocks, "aws:sagemaker/model:Model").inputs["primaryContainer"]["image"].endswith("0.33.0-lmi15.0.0-cu128")


def test_unrecorded_version_deploys_with_a_warning(monkeypatch):
    import pulumi

    warnings = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(msg))
    mocks = run(stack_config("realtime", lmi_version="0.32.0"), stack="lmi-version")
    image = one(mocks, "aws:sagemaker/model:Model").inputs["primaryContainer"]["image"]
    assert ":0.32.0-" in image, "llmdeploy:lmiVersion must choose the LMI version"
    assert any("0.32.0" in w and "unknown" in w for w in warnings), warnings
    custom = "111122223333.dkr.ecr.us-east-1.amazonaws.com/lmi:custom"
    mocks = run(stack_config("realtime", lmi_image=custom), stack="lmi-image")
    assert one(mocks, "aws:sagemaker/model:Model").inputs["primaryContainer"]["image"] == custom
    assert any(custom in w for w in warnings)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "reserved"])
def test_production_variants_match_the_sagemaker_api_model(mode):
    """Each variant member is a ProductionVariant member of botocore's model, enums within their values."""
    shape = _sagemaker_shape("ProductionVariant")
    (variant,) = one(run_mode(mode), "aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs["productionVariants"]
    required = set(shape.required_members)
    members = {key[0].upper() + key[1:]: value for key, value in variant.items()}
    assert required <= set(members), f"missing {required - set(members)}"
    for name, value in members.items():
        assert name in shape.members, f"{name} is not a ProductionVariant member"
        member = shape.members[name]
        if getattr(member, "enum", None):
            assert value in member.enum, f"{name}={value!r} not in {member.enum}"
        if member.type_name == "integer" and "min" in member.metadata:
            assert member.metadata["min"] <= value <= member.metadata.get("max", value), name
