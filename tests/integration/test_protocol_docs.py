"""Every shell command and Python example of docs/protocols.md works against a real server.

The code blocks are read from the document itself and run as they are, with IRIS_URL set to
the shared `bentoml serve` of the tests; `curl -f` turns any HTTP error into a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from iris_pipeline.paths import PROJECT_ROOT, VENV_BIN
from tools.local_server import LocalServer

pytestmark = pytest.mark.server

DOC = PROJECT_ROOT / "docs" / "protocols.md"
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_document_has_its_examples() -> None:
    languages = [language for language, _ in BLOCKS]
    assert languages.count("bash") >= 4 and languages.count("python") >= 1


@pytest.mark.parametrize(
    ("language", "code"), BLOCKS, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(BLOCKS)]
)
def test_documented_example_runs(server: LocalServer, language: str, code: str) -> None:
    env = {
        **os.environ,
        "IRIS_URL": server.url,
        "IRIS_GRPC": f"127.0.0.1:{server.grpc_port()}",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = (
        ["bash", "-euo", "pipefail", "-c", code]
        if language == "bash"
        else [sys.executable, "-c", code]
    )
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.strip(), "every example prints an answer"
    assert "error" not in result.stdout.lower(), result.stdout[-2000:]
