"""gunicorn settings for `make serve` from a checkout: skserve's own, from the package.

Every setting and its reason is in src/skserve/gunicorn_config.py, which `skserve serve` uses too.
"""

import sys
from pathlib import Path

# From a checkout the package may not be installed; src/ makes it importable either way.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from skserve.gunicorn_config import *  # noqa: F403 (gunicorn reads the settings from this module's names)
