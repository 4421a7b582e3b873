"""The LMI (DJL Serving) images llmdeploy serves with, read once from ``data/lmi.toml`` (their one home).

Like the price catalog, the data is loaded by this one module and every query takes the
loaded ``LmiTable`` as its first argument, so tests can pass a two-row table. Pure Python
(tomllib only): the planning path imports it through ``stackconfig`` for the default version.

What it answers: the pinned default version; what a version ships (Python, torch,
transformers, tokenizers, CUDA) and where that was read; whether a CPU build exists for
serverless; which SageMaker InferenceAmiVersion a version's CUDA needs; the requirements
the CPU image must install for the handler.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from types import MappingProxyType

from llmdeploy.catalog import Source, source_of
from llmdeploy.errors import ConfigError

PATH = Path(__file__).parent / "data" / "lmi.toml"
SCHEMA_VERSION = 1
_CUDA_TAG = re.compile(r"-cu(\d+)(\d)$")  # "...-cu128" -> 12.8, "-cu130" -> 13.0


@dataclass(frozen=True)
class LmiRelease:
    version: str  # sagemaker-core's djl-lmi version key
    image_tag: str
    branch: str  # the djl-serving branch holding the image's recipe
    python: str
    torch: str
    transformers: str  # PEP 440 specifier: "==X" when the recipe pins X, else the recipe's range
    tokenizers: str
    cuda: str  # "12.8"
    cpu_full: bool  # a djl-inference:<version>-cpu-full build exists
    source: Source

    @property
    def transformers_pinned(self) -> str | None:
        """The exact transformers inside the image when the recipe pins it, else None (a range)."""
        spec = self.transformers.strip()
        return spec[2:] if spec.startswith("==") and "," not in spec else None


@dataclass(frozen=True)
class CpuImage:
    tag: str  # template with {version}
    python: str
    torch: str
    requirements: tuple[str, ...]  # pip lines the handler needs there (the image has no transformers)
    jvm_heap_gib: float  # DJL's Java front end (JAVA_OPTS -Xmx), memory beside the Python worker
    source: Source
    recipe_source: Source


@dataclass(frozen=True)
class InferenceAmi:
    name: str
    driver: int
    cuda: str


@dataclass(frozen=True)
class SageMakerHosts:
    default_driver: int
    default_cuda: str
    default_families: tuple[str, ...]
    compat_cuda_majors: tuple[int, ...]
    inference_amis: Mapping[str, InferenceAmi]
    source: Source


@dataclass(frozen=True)
class Ctranslate2Wheels:
    version: str
    gpu_requirements: tuple[str, ...]  # cuBLAS 12 for the CUDA 13 images (see lmi.toml)
    source: Source


@dataclass(frozen=True)
class LmiTable:
    default: str
    default_source: Source
    versions: Mapping[str, LmiRelease]
    cpu_image: CpuImage
    tested_lmi_version: str
    tested_transformers: str
    tested_tokenizers: str
    hosts: SageMakerHosts
    sources: Mapping[str, Source]
    ctranslate2: Ctranslate2Wheels | None = None


# -- loading -------------------------------------------------------------------------------------


_source = partial(source_of, prefix=f"{PATH.name}:", defined_in="[sources]")


def parse_table(raw: Mapping) -> LmiTable:
    """Build the table from parsed TOML; ConfigError names the first malformed entry."""
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"{PATH.name} has schema_version {raw.get('schema_version')!r}; this llmdeploy reads {SCHEMA_VERSION}.")
    sources = {k: Source(k, r["url"], r["retrieved"], r.get("note", "")) for k, r in raw["sources"].items()}
    versions = {}
    for version, row in raw["versions"].items():
        versions[version] = LmiRelease(
            version=version, image_tag=row["image_tag"], branch=row["branch"], python=str(row["python"]),
            torch=str(row["torch"]), transformers=row["transformers"], tokenizers=row["tokenizers"],
            cuda=str(row["cuda"]), cpu_full=bool(row["cpu_full"]),
            source=_source(sources, row["source"], f"versions.{version}"))
    if raw["default"] not in versions:
        raise ConfigError(f"{PATH.name}: default {raw['default']!r} is not one of [versions] ({', '.join(versions)}).")
    cpu = raw["cpu_image"]
    hosts = raw["sagemaker_hosts"]
    amis = {name: InferenceAmi(name, int(a["driver"]), str(a["cuda"])) for name, a in hosts["inference_amis"].items()}
    tested = raw["tested"]
    return LmiTable(
        default=raw["default"],
        default_source=_source(sources, raw["default_source"], "default"),
        versions=MappingProxyType(versions),
        cpu_image=CpuImage(cpu["tag"], str(cpu["python"]), str(cpu["torch"]), tuple(cpu["requirements"]),
                           float(cpu["jvm_heap_gib"]), _source(sources, cpu["source"], "cpu_image"),
                           _source(sources, cpu["recipe_source"], "cpu_image.recipe_source")),
        tested_lmi_version=tested["lmi_version"],
        tested_transformers=tested["transformers"],
        tested_tokenizers=tested["tokenizers"],
        hosts=SageMakerHosts(int(hosts["default_driver"]), str(hosts["default_cuda"]), tuple(hosts["default_families"]),
                             tuple(int(m) for m in hosts["compat_cuda_majors"]), MappingProxyType(amis),
                             _source(sources, hosts["source"], "sagemaker_hosts")),
        sources=MappingProxyType(sources),
        ctranslate2=Ctranslate2Wheels(str(raw["ctranslate2"]["version"]),
                                      tuple(raw["ctranslate2"]["gpu_requirements"]),
                                      _source(sources, raw["ctranslate2"]["source"], "ctranslate2"))
        if "ctranslate2" in raw else None,
    )


@cache
def load_lmi_table() -> LmiTable:
    with PATH.open("rb") as fh:
        return parse_table(tomllib.load(fh))


def default_lmi_version() -> str:
    return load_lmi_table().default


# -- queries -------------------------------------------------------------------------------------


def release(table: LmiTable, version: str) -> LmiRelease | None:
    """What ``version`` ships, or None when its recipe was not read (its requirements are unknown)."""
    return table.versions.get(version)


def unknown_requirements_note(table: LmiTable, version: str) -> str | None:
    """One line for a version we serve without knowing its libraries; None for a recorded version."""
    if version in table.versions:
        return None
    return (f"LMI {version} is not among the versions whose libraries llmdeploy has checked "
            f"({', '.join(table.versions)}): its transformers, torch and CUDA are unknown, so the handler and the "
            f"endpoint's host AMI are untested with it. Pin llmdeploy:lmiVersion to {table.default} unless you have "
            "tried it.")


def cuda_of_tag(tag: str) -> str | None:
    """The CUDA version an LMI image tag names ("...-cu128" -> "12.8"), None when it names none."""
    match = _CUDA_TAG.search(tag.strip())
    return f"{int(match.group(1))}.{match.group(2)}" if match else None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def inference_ami_for_cuda(table: LmiTable, cuda: str | None) -> str:
    """The InferenceAmiVersion an endpoint running a CUDA ``cuda`` image needs; "" when the default hosts serve it.

    The default hosts (driver 470) reach the CUDA majors in ``compat_cuda_majors`` through the images'
    cuda-compat package; any other CUDA gets the lowest-driver AMI whose CUDA is at least the image's.
    """
    if not cuda or _version_tuple(cuda)[0] in table.hosts.compat_cuda_majors:
        return ""
    wanted = _version_tuple(cuda)
    fitting = [a for a in table.hosts.inference_amis.values() if _version_tuple(a.cuda) >= wanted]
    if not fitting:
        raise ConfigError(f"no SageMaker InferenceAmiVersion in {PATH.name} has a driver for CUDA {cuda} "
                          f"(known: {', '.join(table.hosts.inference_amis)}).",
                          hint="Pin llmdeploy:lmiVersion to an older LMI version.")
    return min(fitting, key=lambda a: (a.driver, a.name)).name


def cpu_image_tag(table: LmiTable, version: str) -> str | None:
    """The djl-inference CPU build's tag for ``version``; None when no CPU build of it is recorded."""
    rel = table.versions.get(version)
    return table.cpu_image.tag.format(version=version) if rel is not None and rel.cpu_full else None


def cpu_versions(table: LmiTable) -> list[str]:
    return [v for v, r in table.versions.items() if r.cpu_full]


def cpu_image_requirements(table: LmiTable, *, backend: str = "transformers") -> str:
    """requirements.txt for model.tar.gz: the handler's libraries, for the CPU image's Python only.

    DJL's Python engine pip-installs a model folder's requirements.txt before starting the worker.
    The LMI GPU images already ship transformers (and run another Python), so every line carries a
    ``python_version`` marker that pip skips there, without touching the network. The ctranslate2
    backend adds CTranslate2 for every image, and cuBLAS 12 for the GPU images' Python (lmi.toml [ctranslate2]).
    """
    marker = f'python_version == "{table.cpu_image.python}"'
    lines = [
        "# Written by `llmdeploy package`: the handler's libraries for the djl-inference CPU image (Python "
        f"{table.cpu_image.python}, no transformers).",
        "# DJL pip-installs this at start-up; inside the LMI GPU images (Python 3.12, transformers included) pip "
        "skips the lines marked for 3.11.",
    ]
    lines += [f"{req}; {marker}" for req in table.cpu_image.requirements]
    if backend == "ctranslate2":
        if table.ctranslate2 is None:
            raise ConfigError(f"{PATH.name} has no [ctranslate2] table: the ctranslate2 backend's wheels are unknown.")
        gpu_python = sorted({r.python for r in table.versions.values()})
        lines += ["# option.backend=ctranslate2: no LMI image ships CTranslate2; the GPU images also get cuBLAS 12 "
                  "(CTranslate2's wheels open libcublas.so.12; LMI 0.36 is CUDA 13).",
                  f"ctranslate2=={table.ctranslate2.version}"]
        lines += [f"{req}; " + " or ".join(f'python_version == "{v}"' for v in gpu_python)
                  for req in table.ctranslate2.gpu_requirements]
    return "\n".join(lines) + "\n"
