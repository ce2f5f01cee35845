"""Commands that judge nothing do not import scikit-learn or SciPy's statistics.

`make models`, `make rollback` and `train.py --if-missing` run dozens of times in the test
suite and by hand; importing scikit-learn (and scipy.stats under it) costs them about a
second and a half each. Only the functions that fit or score models import it
(iris_pipeline/training.py, gate.gate_metrics).
"""

from __future__ import annotations

import json
import subprocess
import sys

from iris_pipeline.paths import PROJECT_ROOT

HEAVY = ("sklearn", "scipy.stats")


def test_lifecycle_and_train_entry_points_import_no_scikit_learn() -> None:
    probe = (
        "import json, sys\n"
        "import iris_pipeline.lifecycle, iris_pipeline.restore, train\n"
        f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []
