"""DJL Serving entry module (``option.entryPoint=model.py``) for the LMI container.

DJL's Python engine loads this file from the model folder and calls ``handle`` (sync
mode: option.entryPoint is set, so no LMI default handler or async mode is chosen).
djl_python 0.33 imports it as module ``model``; 0.36 loads it by path under a hashed
module name (service_loader.load_model_service), so the relative import below fails
there and the flat one resolves through PYTHONPATH, which DJL sets to the model folder.
The handler modules sit flat next to this file in model.tar.gz; in a source checkout
the package-relative import is used. djl_python exists only inside the container, so
it is imported on the first call.
"""

from __future__ import annotations

import os

try:
    from .lmi_service import Seq2SeqService
except ImportError:  # flat, inside the container
    from lmi_service import Seq2SeqService  # type: ignore[no-redef]

_service = Seq2SeqService(model_dir=os.path.dirname(os.path.abspath(__file__)))


def handle(inputs):
    from djl_python import Output  # only present inside DJL Serving / LMI

    return _service.handle(inputs, Output)
