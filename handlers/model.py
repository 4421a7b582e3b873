"""DJL Serving entry module (``option.entryPoint=model.py``) for the LMI container.

DJL's Python engine imports this file from the model folder and calls ``handle``.
The handler modules sit flat next to it in model.tar.gz, so they are imported by
their plain names there; in a source checkout the package-relative import is used.
djl_python exists only inside the container, so it is imported on the first call.
"""

from __future__ import annotations

try:
    from .lmi_service import Seq2SeqService
except ImportError:  # flat, inside the container
    from lmi_service import Seq2SeqService

_service = Seq2SeqService()


def handle(inputs):
    from djl_python import Output  # only present inside DJL Serving / LMI

    return _service.handle(inputs, Output)
