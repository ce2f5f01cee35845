"""What the tests need besides Debian's packages, made before they run (part of `make test`).

Nothing is installed in the middle of a test run: MLServer's own venv (the bench smoke's and
the gRPC bench's peer, tools/bench/mlserver.py) and the container tools with the local base
image (tools/containers.py) and the class archive Spark's JVMs start from (tools/spark_jvm.py)
are made here, once; each step is a no-op when already done.
"""

from __future__ import annotations

import sys
import time

from tools import containers, spark_jvm
from tools.bench import mlserver


def main() -> int:
    started = time.monotonic()
    executable = mlserver.ensure_venv()
    print(f"test set-up: MLServer venv ready ({executable})")
    backend = containers.pick_backend()
    env = containers.setup(backend)
    print(f"test set-up: container backend {backend}, base {env.get('BENTO_BASE_IMAGE', '-')}")
    print(f"test set-up: Spark's class archive {spark_jvm.class_archive() or '(none: defaults)'}")
    print(f"test set-up: done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
