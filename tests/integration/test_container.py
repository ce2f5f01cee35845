"""The OCI image, end to end: build it from the current tree (`bentoml build` + `bentoml
containerize`), run it bound to 127.0.0.1, and talk to it over HTTP.

The image fails closed: it requires an API key (IRIS_API_KEYS_REQUIRED=true) of at least
API_KEY_MIN_LENGTH characters, and its code, models and Python environment belong to root.
The shared container runs as Kubernetes runs it (deploy/k8s/base/deployment.yaml): a read-only
root file system with writable memory only for BentoML's home and /tmp, and a key.

Daemonless machines (no Docker engine) get their tools from tools/container/install-tools.sh,
so this runs, not skips, wherever those can be installed (root or sudo, apt). The local base
image is cached (local store + ~/.cache/iris-service), so a warm run costs the Bento build and
the `uv pip install` layer: about 2 minutes here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
import uvloop

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.inference.model_aliases import read_aliases
from iris_service.names import MODEL_NAME
from iris_service.settings import API_KEY_MIN_LENGTH, DEFAULT_GRPC_PORT
from tests.integration.container_support import BUILD_TIMEOUT_S, running_container
from tests.support import SETOSA
from tools import containers
from tools.serve_requirements import LOCK, canonical, constraint_pins

LIST_DISTRIBUTIONS = """
import importlib.metadata
for dist in importlib.metadata.distributions():
    print(f"{dist.metadata['Name']}=={dist.version}")
"""
# Where the build host keeps its locally added CA certificates (update-ca-certificates).
HOST_EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")

pytestmark = [pytest.mark.container, pytest.mark.timeout(BUILD_TIMEOUT_S)]

API_KEY = "container-test-key-" + "0123456789abcdef" * 2
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Writable memory where the server writes (BentoML's home, /tmp); the rest is read-only.
READ_ONLY = (
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs",
    f"{containers.RUNTIME_HOME}:rw,size=256m,mode=0700,U",
    "--tmpfs",
    "/tmp:rw,size=64m,mode=1777",
)
START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def container(image):
    backend, env, tag = image
    options = (*READ_ONLY, "--env", f"IRIS_API_KEY={API_KEY}")
    with running_container(backend, env, tag, options=options) as (base, cli, name):
        yield base, cli, name, env


def test_prediction(container):
    """Answers with the key, on a read-only root file system; 401 without it."""
    base, *_ = container
    resp = requests.post(f"{base}/predict", json=SETOSA, headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["class_name"] == "setosa"
    assert requests.post(f"{base}/predict", json=SETOSA, timeout=10).status_code == 401


def _start_fails(image, *options: str) -> str:
    """Run the image in the foreground with `options`; assert that it exits with an error
    before serving, and return its output."""
    backend, env, tag = image
    cmd = [containers.runner_cli(backend), "run", "--rm", *options, tag]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert out.returncode != 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout + out.stderr


def test_the_image_does_not_start_without_a_key(image):
    output = _start_fails(image)
    (line,) = [line for line in output.splitlines() if line.startswith("Error:")]
    assert "API keys are required (IRIS_API_KEYS_REQUIRED=true)" in line, output[-2000:]
    assert "Traceback" not in output, output[-2000:]


def test_the_image_does_not_start_with_a_short_or_blank_key(image):
    short = "k" * (API_KEY_MIN_LENGTH - 1)
    output = _start_fails(image, "--env", f"IRIS_API_KEY={short}")
    (line,) = [line for line in output.splitlines() if line.startswith("Error:")]
    assert f"shorter than {API_KEY_MIN_LENGTH} characters" in line and short not in output
    # A blank Secret (the keys variable set but empty) is no key at all: refused too.
    output = _start_fails(image, "--env", "IRIS_API_KEYS= , ")
    assert "API keys are required" in output, output[-2000:]


def test_code_models_and_environment_are_not_writable_by_the_server(container):
    """Everything the image brings (the Bento's code and models, the Python environment)
    belongs to root: the server's user can change none of it, even where the file system
    is writable; its only writable directory is BentoML's home."""
    script = (
        "id -un; echo $BENTOML_HOME; "
        "find /home/bentoml /app \\( -writable -o ! -user root \\) -print | head -n 20; "
        "touch /home/bentoml/bento/src/service.py 2>/dev/null && echo WROTE-CODE; "
        "stat -c %U $BENTO_PATH/models $BENTO_PATH/src/service.py /app/.venv/bin/python"
    )
    user, home, *rest = _exec(container, "sh", "-c", script).split()
    assert user == "bentoml" and home == containers.RUNTIME_HOME
    assert rest == ["root", "root", "root"], rest  # nothing writable, nothing else owned
    assert "WROTE-CODE" not in rest


def test_the_image_serves_the_explicit_champion_it_pins(container, trained_state):
    """The image names its champion by version (IRIS_MODEL_TAG, never `latest`), packs it, and
    serves it: the answer's model_tag and GET /model agree with the store's champion."""
    base, *_ = container
    pinned = _exec(container, "printenv", "IRIS_MODEL_TAG").strip()
    aliases = read_aliases(MODEL_NAME, trained_state.bentoml_home)
    assert aliases is not None and aliases.champion  # the first model of a store is champion
    assert pinned == aliases.champion and not pinned.endswith(":latest"), (pinned, aliases)
    model = requests.get(f"{base}/model", headers=AUTH, timeout=10).json()
    assert model["champion"] == pinned
    answer = requests.post(f"{base}/predict", json=SETOSA, headers=AUTH, timeout=10).json()
    assert answer["model_tag"] == pinned


def test_validation_error(container):
    base, *_ = container
    invalid = {**SETOSA, "sepal_length": "5.1"}
    resp = requests.post(f"{base}/predict", json=invalid, headers=AUTH, timeout=10)
    assert resp.status_code == 400, resp.text


def test_metrics_and_docs(container):
    base, *_ = container
    requests.post(f"{base}/predict", json=SETOSA, headers=AUTH, timeout=10)
    metrics = requests.get(f"{base}/metrics", timeout=10)  # open to the scraper
    assert metrics.status_code == 200
    assert "bentoml_service_request_total" in metrics.text
    assert requests.get(f"{base}/livez", timeout=10).status_code == 200
    assert requests.get(f"{base}/", headers=AUTH, timeout=10).status_code == 200  # Swagger UI


def test_runs_as_non_root_with_packed_config(container):
    _, cli, name, env = container
    out = subprocess.run(
        [cli, "exec", name, "sh", "-c", 'id -u; echo "$BENTOML_CONFIG"; test -f "$BENTOML_CONFIG"'],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    uid, config = out.stdout.split()
    assert uid != "0"
    assert config == "/home/bentoml/bento/src/configuration.yaml"


def _exec(container, *argv: str) -> str:
    _, cli, name, env = container
    out = subprocess.run(
        [cli, "exec", name, *argv], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_bento_holds_the_served_code_and_nothing_else(container):
    """service.py, the iris_service package and the runtime configuration (plus the
    bentofile.yaml that BentoML always copies): no pipeline, no tools, no tests."""
    script = "cd /home/bentoml/bento/src && find . -type f ! -path '*/__pycache__/*' | sort"
    packed = _exec(container, "sh", "-c", script).split()
    tracked = subprocess.run(
        ["git", "ls-files", "service.py", "iris_service", "configuration.yaml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(f"./{path}" for path in [*tracked, "bentofile.yaml"]) == packed


def test_the_image_installs_exactly_the_pinned_versions(container):
    """The Python environment of the image (BentoML's venv, which has no pip) holds exactly
    requirements-serve.lock: every pinned distribution at its pinned version (the set the tests
    ran with and the audit checked), and nothing else."""
    pins = constraint_pins(LOCK)
    listing = _exec(container, "python", "-c", LIST_DISTRIBUTIONS)
    installed = {}
    for line in listing.split():
        name, _, version = line.partition("==")
        installed[canonical(name)] = version
    assert len(installed) > 50, listing  # BentoML, ONNX Runtime and their dependencies
    # Models are served compiled: the image holds ONNX Runtime, neither scikit-learn nor SciPy.
    assert "onnxruntime" in installed
    assert not {"scikit-learn", "scipy"} & set(installed), sorted(installed)
    assert installed == pins, {
        name: (installed.get(name), pins.get(name))
        for name in set(installed) | set(pins)
        if installed.get(name) != pins.get(name)
    }


def test_the_image_trusts_only_debians_certificates(container):
    """The build host's extra CA certificates (mounted only while building) are not in the
    runtime image."""
    bundle = _exec(container, "cat", "/etc/ssl/certs/ca-certificates.crt")
    assert "BEGIN CERTIFICATE" in bundle
    host_extra = sorted(HOST_EXTRA_CA_DIR.glob("*.crt"))
    for crt in host_extra:
        body = "".join(crt.read_text().strip().splitlines()[1:-1])
        assert body not in bundle.replace("\n", ""), f"{crt.name} is in the image's CA bundle"
    assert _exec(container, "ls", "/usr/local/share/ca-certificates/").split() == []


def test_the_build_only_installers_are_not_in_the_image(container):
    """uv (which filled the environment) and the base's pip are build tools, and NumPy's test
    suites and ONNX Runtime's conversion tools are never imported: the runtime image holds
    none of them (tools/containers.py, HARDENING)."""
    found = _exec(
        container,
        "sh",
        "-c",
        "for tool in uv uvx pip pip3; do command -v $tool || true; done; "
        "ls -d /usr/lib/python3/dist-packages/pip /usr/local/bin/uv "
        f"{containers.SITE_PACKAGES}/numpy/_core/tests "
        f"{containers.SITE_PACKAGES}/onnxruntime/transformers 2>/dev/null || true; "
        "python3 -c 'import importlib.util as u; print(u.find_spec(\"pip\") is not None)'",
    ).split()
    assert found == ["False"], found


def test_the_image_declares_the_http_and_grpc_ports(image):
    """Port 3000 (HTTP) from BentoML's Dockerfile, 8001 (V2 gRPC) from the read-only layer:
    what `podman run -P` and orchestrators read from the image."""
    backend, env, tag = image
    exposed = subprocess.run(
        [
            containers.runner_cli(backend),
            "image",
            "inspect",
            "--format",
            "{{json .Config.ExposedPorts}}",
            tag,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert {"3000/tcp", f"{DEFAULT_GRPC_PORT}/tcp"} <= set(json.loads(exposed)), exposed


def test_the_images_compiled_extensions_have_no_symbol_tables(container):
    """The hardening layer lays stripped copies over the shared libraries whose wheels ship
    symbol tables (tools/stripped_libraries.py): uvloop's event loop in the image is smaller
    than the same pinned wheel's file in the project's environment, and it still loads (the
    server runs on uvloop)."""
    relative = "uvloop/loop.cpython-311-x86_64-linux-gnu.so"
    in_image = int(_exec(container, "stat", "-c", "%s", f"{containers.SITE_PACKAGES}/{relative}"))
    in_wheel = (Path(uvloop.__file__).parent / Path(relative).name).stat().st_size
    assert in_image < in_wheel / 2, (in_image, in_wheel)
    loop = _exec(container, "python", "-c", "import uvloop; print(uvloop.new_event_loop())")
    assert "uvloop.Loop" in loop, loop
