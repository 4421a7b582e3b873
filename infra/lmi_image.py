"""Which container image serves the model: resolved offline with sagemaker-core's image_uris.

GPU modes (realtime, async, reserved) run AWS's Large Model Inference container
(DJL Serving), ``image_uris.retrieve("djl-lmi", region, version)``. The version is
pinned in the stack config (``lmiVersion``, default ``DEFAULT_LMI_VERSION``) so a
redeploy never picks up a new container by surprise; ``lmiImage`` overrides it.

Serverless endpoints have no GPU and cap the container image at 10 GB, which the
CUDA-based LMI image exceeds (and sagemaker-core knows no CPU build of it). They
use the Hugging Face PyTorch *CPU* inference image instead, which serves a Hub
model through HF_MODEL_ID / HF_TASK with no custom code.

``sagemaker.core`` takes ~2 s to import, so it is imported inside the functions.
"""

from __future__ import annotations

from llmdeploy.errors import ConfigError

LMI_FRAMEWORK = "djl-lmi"
# Hugging Face PyTorch inference (CPU build) for serverless: transformers 4.49 on PyTorch 2.6, py312.
SERVERLESS_FRAMEWORK = "huggingface"
SERVERLESS_TRANSFORMERS_VERSION = "4.49.0"
SERVERLESS_BASE_FRAMEWORK = "pytorch2.6.0"
# Any CPU instance family makes image_uris pick the "cpu" processor tag.
_CPU_INSTANCE_HINT = "ml.m5.xlarge"


def lmi_versions() -> list[str]:
    """LMI versions this sagemaker-core knows, newest first (without the "latest" alias)."""
    from sagemaker.core import image_uris

    versions = [v for v in image_uris.list_versions(LMI_FRAMEWORK) if v != "latest"]
    return sorted(versions, key=_version_key, reverse=True)


def lmi_image(region: str, version: str, override: str = "") -> str:
    """The LMI image URI for ``region``; ``override`` (the stack's lmiImage) wins when set."""
    if override:
        return override
    from sagemaker.core import image_uris

    known = lmi_versions()
    if version not in known:
        raise ConfigError(
            f"llmdeploy:lmiVersion {version!r} is not an LMI version sagemaker-core knows; valid: {', '.join(known)}.",
            hint="Set llmdeploy:lmiVersion to one of them, or llmdeploy:lmiImage to a full image URI.",
        )
    try:
        return image_uris.retrieve(LMI_FRAMEWORK, region, version)
    except ValueError as exc:  # region without an LMI registry
        raise ConfigError(f"no LMI {version} image for region {region!r}: {exc}") from None


def serverless_image(region: str) -> str:
    """The Hugging Face PyTorch CPU inference image for ``region`` (serverless has no GPU)."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(
            SERVERLESS_FRAMEWORK,
            region,
            version=SERVERLESS_TRANSFORMERS_VERSION,
            base_framework_version=SERVERLESS_BASE_FRAMEWORK,
            image_scope="inference",
            instance_type=_CPU_INSTANCE_HINT,
        )
    except ValueError as exc:
        raise ConfigError(f"no Hugging Face CPU inference image for region {region!r}: {exc}") from None


def ecr_repository_arn(image_uri: str) -> str | None:
    """``arn:aws:ecr:REGION:ACCOUNT:repository/REPO`` for an ECR image URI, None for any other registry.

    Lets IAM policies name the one repository images are pulled from instead of ``*``.
    """
    host, _, rest = image_uri.partition("/")
    parts = host.split(".")
    # ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]
    if len(parts) < 6 or parts[1:3] != ["dkr", "ecr"] or not rest:
        return None
    account, region = parts[0], parts[3]
    repo = rest.split("@", 1)[0]  # drop a digest
    head, _, last = repo.rpartition("/")
    last = last.split(":", 1)[0]  # drop a tag
    repo = f"{head}/{last}" if head else last
    return f"arn:{partition(region)}:ecr:{region}:{account}:repository/{repo}"


def ecr_registry(image_uri: str) -> str | None:
    """The registry host of an ECR image (what ``docker login`` needs), None otherwise."""
    return image_uri.split("/", 1)[0] if ecr_repository_arn(image_uri) else None


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


if __name__ == "__main__":
    # `python -m llmdeploy.infra.lmi_image REGION [VERSION]`: the URI for `docker build --build-arg LMI_IMAGE=...`.
    import sys

    from llmdeploy.stackconfig import DEFAULT_LMI_VERSION

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m llmdeploy.infra.lmi_image REGION [VERSION]")
    try:
        print(lmi_image(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else DEFAULT_LMI_VERSION))
    except ConfigError as exc:
        sys.exit(f"Error: {exc}")
