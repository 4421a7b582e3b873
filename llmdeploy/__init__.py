"""llmdeploy: size, price, provision and serve LLMs on AWS.

The planning core in this package is pure Python: no cloud SDK, torch or
transformers import may happen at module import time anywhere under
``llmdeploy`` except inside the functions that need them.
"""

__version__ = "0.1.0"
