"""``python -m swgguf``: the ``swgguf`` command."""

import sys

from .cli import main

sys.exit(main())
