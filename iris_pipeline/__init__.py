"""The model pipeline: train candidates, track them in MLflow, register and import the winner.

Never imported by the served code (`iris_service`): it needs MLflow, pandas and matplotlib,
which the Bento does not install.
"""

import sys as _sys

from iris_pipeline.paths import use_project_stores as _use_project_stores

# Whoever starts an entry point (make, a shell, a test), it uses the same stores.
_warning = _use_project_stores()
if _warning:
    print(_warning, file=_sys.stderr)
