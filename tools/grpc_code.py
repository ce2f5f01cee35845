"""Generate the Python code of the V2 gRPC proto (iris_service/protocols/grpc_generated).

The generated modules are checked in, so neither `bentoml build` nor the image needs a
compiler; this regenerates them with the pinned grpcio-tools (requirements-dev.txt) and makes
the one import of the service stub relative, so the folder is an ordinary subpackage.

    python -m tools.grpc_code            # write the generated modules (make grpc-code)
    python -m tools.grpc_code --check    # exit 1 when they differ from a fresh generation
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

from iris_pipeline.paths import PROJECT_ROOT

FOLDER = PROJECT_ROOT / "iris_service" / "protocols" / "grpc_generated"
PROTO = "grpc_predict_v2.proto"
OUTPUTS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


def generate(into: Path) -> dict[str, str]:
    """The generated modules' text by file name, written into `into`."""
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{FOLDER}",
            f"--python_out={into}",
            f"--pyi_out={into}",
            f"--grpc_python_out={into}",
            str(FOLDER / PROTO),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    texts = {name: (into / name).read_text() for name in OUTPUTS}
    stub = "grpc_predict_v2_pb2_grpc.py"
    texts[stub] = texts[stub].replace(
        "import grpc_predict_v2_pb2 as", "from . import grpc_predict_v2_pb2 as"
    )
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        texts = generate(Path(scratch))
    if args.check:
        stale = [n for n, t in texts.items() if (FOLDER / n).read_text() != t]
        if stale:
            print(f"out of date: {', '.join(stale)}; run `make grpc-code`", file=sys.stderr)
            return 1
        return 0
    for name, text in texts.items():
        (FOLDER / name).write_text(text)
    print(f"wrote {', '.join(OUTPUTS)} in {FOLDER.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
