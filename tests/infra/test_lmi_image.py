"""The LMI image is resolved offline with sagemaker-core at the pinned version."""

import pytest

from llmdeploy.errors import ConfigError
from llmdeploy.infra import lmi_image
from llmdeploy.stackconfig import DEFAULT_LMI_VERSION

from .mocks import one, run, run_mode, stack_config

PINNED_US_EAST_1 = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"


def test_pinned_version_is_known_to_sagemaker_core():
    assert DEFAULT_LMI_VERSION in lmi_image.lmi_versions(), "the pinned LMI version must be one sagemaker-core knows"


def test_pinned_lmi_image_uri_for_us_east_1():
    assert lmi_image.lmi_image("us-east-1", DEFAULT_LMI_VERSION) == PINNED_US_EAST_1


def test_lmi_image_override_wins():
    assert lmi_image.lmi_image("us-east-1", "0.0.0", "123.dkr.ecr.us-east-1.amazonaws.com/mine:1") == (
        "123.dkr.ecr.us-east-1.amazonaws.com/mine:1")


def test_unknown_version_names_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        lmi_image.lmi_image("us-east-1", "0.99.0")
    assert "0.99.0" in str(err.value) and DEFAULT_LMI_VERSION in str(err.value), "the error must list valid versions"


def test_serverless_uses_a_cpu_image():
    uri = lmi_image.serverless_image("us-east-1")
    assert "huggingface-pytorch-inference" in uri and "-cpu-" in uri, "serverless has no GPU: the image must be a CPU build"


def test_ecr_repository_arn():
    assert lmi_image.ecr_repository_arn(PINNED_US_EAST_1) == "arn:aws:ecr:us-east-1:763104351884:repository/djl-inference"
    assert lmi_image.ecr_repository_arn("docker.io/library/nginx:1") is None


@pytest.mark.parametrize("mode", ["realtime", "async"])
def test_sagemaker_model_runs_the_pinned_lmi_image(mode):
    model = one(run_mode(mode), "aws:sagemaker/model:Model")
    assert model.inputs["primaryContainer"]["image"] == PINNED_US_EAST_1


def test_lmi_version_and_image_from_config():
    mocks = run(stack_config("realtime", lmi_version="0.32.0"), stack="lmi-version")
    image = one(mocks, "aws:sagemaker/model:Model").inputs["primaryContainer"]["image"]
    assert ":0.32.0-" in image, "llmdeploy:lmiVersion must choose the LMI version"
    custom = "111122223333.dkr.ecr.us-east-1.amazonaws.com/lmi:custom"
    mocks = run(stack_config("realtime", lmi_image=custom), stack="lmi-image")
    assert one(mocks, "aws:sagemaker/model:Model").inputs["primaryContainer"]["image"] == custom


def test_dockerfile_pins_the_same_lmi_image_as_the_stack_default():
    """One pinned LMI version: the self-hosted Dockerfile's default must be the stack default's image."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from llmdeploy.infra.lmi_image import lmi_image
    from llmdeploy.stackconfig import DEFAULT_LMI_VERSION

    dockerfile = (Path(__file__).resolve().parents[2] / "containers" / "Dockerfile").read_text()
    pinned = re.search(r"^ARG LMI_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert pinned == lmi_image("us-east-1", DEFAULT_LMI_VERSION)
    out = subprocess.run([sys.executable, "-m", "llmdeploy.infra.lmi_image", "us-east-1"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == pinned
