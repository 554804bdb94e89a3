"""Entry point of the operator: ``kopf run --standalone --all-namespaces operator/main.py``.

Importing the handlers registers them with kopf. The package sits next to this file; the directory is
put on sys.path so this works from a checkout as well as in the image (where PYTHONPATH also says so)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamtrain_operator.handlers  # noqa: E402,F401
