"""The LMI inference handler (installed as ``llmdeploy.handlers``; copied flat next to ``model.py`` in the container).

Inside the LMI container only torch and transformers exist (no llmdeploy), and the modules sit flat in the model
folder, so each one imports its siblings with ``try: from .x import ...`` and ``except ImportError: from x import ...``.
The ``# type: ignore[no-redef]`` on exactly those fallback imports is deliberate: mypy checks the package, where the
relative import binds the names, and cannot model that the flat import only runs when the relative one failed.
"""
