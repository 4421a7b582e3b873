"""Which container image serves the model, and on which SageMaker host AMI.

Every mode runs the same model.tar.gz with the same handler in an image of AWS's Large
Model Inference family (DJL Serving):

- GPU modes (realtime, async, reserved): the LMI image,
  ``image_uris.retrieve("djl-lmi", region, version)`` with sagemaker-core, offline.
- serverless (no GPU, images up to 10 GB): the family's CPU build,
  ``djl-inference:<version>-cpu-full``, which sagemaker-core does not resolve: it lives in
  the same ECR repository as the LMI tags, so its URI is that repository with the CPU tag
  recorded in ``llmdeploy/data/lmi.toml``.

The version is pinned in the stack config (``lmiVersion``, default from lmi.toml) so a
redeploy never picks up a new container by surprise; ``lmiImage`` overrides the URI.
What each version ships, and the InferenceAmiVersion its CUDA needs on SageMaker hosts,
come from ``llmdeploy.lmi``; a version whose recipe was not read still resolves, with a
warning (``requirements_warning``).

``sagemaker.core`` takes ~2 s to import, so it is imported inside the functions.
"""

from __future__ import annotations

from llmdeploy.errors import ConfigError
from llmdeploy.lmi import (
    cpu_image_tag,
    cpu_versions,
    cuda_of_tag,
    inference_ami_for_cuda,
    load_lmi_table,
    release,
    unknown_requirements_note,
)
from llmdeploy.stackconfig import partition

LMI_FRAMEWORK = "djl-lmi"


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


def serverless_image(region: str, version: str, override: str = "") -> str:
    """The djl-inference CPU image for ``region`` at LMI ``version`` (serverless has no GPU)."""
    if override:
        return override
    table = load_lmi_table()
    tag = cpu_image_tag(table, version)
    if tag is None:
        raise ConfigError(
            f"no CPU build of LMI {version} is recorded for serverless; djl-inference CPU images exist for "
            f"{', '.join(cpu_versions(table))}.",
            hint="Set llmdeploy:lmiVersion to one of them, or llmdeploy:lmiImage to a CPU image URI.")
    repository = lmi_image(region, version).rsplit(":", 1)[0]
    return f"{repository}:{tag}"


def inference_ami_version(version: str, image: str) -> str:
    """The ProductionVariant InferenceAmiVersion ``image`` needs ("" = SageMaker's default hosts serve it).

    Its CUDA comes from lmi.toml when ``image`` is the recorded build of ``version``, else from its tag
    ("...-cu130"); an image whose tag names no CUDA gets the default hosts (and a requirements_warning).
    """
    table = load_lmi_table()
    rel = release(table, version)
    cuda = rel.cuda if rel is not None and image.endswith(":" + rel.image_tag) else cuda_of_tag(image)
    return inference_ami_for_cuda(table, cuda)


def requirements_warning(version: str, image: str) -> str | None:
    """One line when the served image's libraries were not checked (unknown version or a custom image)."""
    table = load_lmi_table()
    rel = release(table, version)
    if rel is None:
        return unknown_requirements_note(table, version)
    recorded = [":" + rel.image_tag] + ([":" + tag] if (tag := cpu_image_tag(table, version)) else [])
    if not any(image.endswith(r) for r in recorded):
        return (f"llmdeploy:lmiImage {image!r} is not a recorded LMI build: llmdeploy has not checked its "
                "transformers, torch and CUDA against the handler.")
    return None


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


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


if __name__ == "__main__":
    # `python -m llmdeploy.infra.lmi_image REGION [VERSION]`: the GPU and CPU image URIs a stack would run.
    import sys

    from llmdeploy.stackconfig import DEFAULT_LMI_VERSION

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m llmdeploy.infra.lmi_image REGION [VERSION]")
    region, version = sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else DEFAULT_LMI_VERSION
    try:
        gpu = lmi_image(region, version)
        print(f"gpu {gpu}")
        print(f"sagemaker-inference-ami {inference_ami_version(version, gpu) or '(default)'}")
    except ConfigError as exc:
        sys.exit(f"Error: {exc}")
    try:
        print(f"cpu {serverless_image(region, version)}")
    except ConfigError:
        print("cpu (no CPU build recorded: serverless cannot use this version)")
    note = requirements_warning(version, gpu)
    if note:
        print(f"warning: {note}", file=sys.stderr)
