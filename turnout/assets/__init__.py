"""What Turnout needs at run time besides its code, shipped as package data so that
``pip install .`` carries it (no file outside the package is read): Envoy's bootstrap
template, Prometheus's alert rules, the example ``classifier`` model that ``stack up``
serves by default, and the demo's rollout policies. The checkout's ``envoy/`` and
``examples/`` name these files through symbolic links."""

from importlib.resources import files
from pathlib import Path

#: This directory (an installed package is plain files on disk, never a zip, here).
ASSETS = Path(str(files(__name__)))
EXAMPLE_MODELS = ASSETS / "models"
EXAMPLE_POLICIES = ASSETS / "examples"
