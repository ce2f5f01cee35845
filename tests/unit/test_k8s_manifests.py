"""deploy/k8s: valid against the Kubernetes schemas (offline, `kubernetes-validate`), and
consistent with the service: probe paths are BentoML health routes, ports are the port the
service listens on, selectors and references line up, the pod cannot run as root. And it
fails closed: the API-key Secret is required, the root file system is read-only (writable
volumes only where the server writes), /metrics is not routed by the ingress, and a
NetworkPolicy admits only the ingress controller and Prometheus to the API pods."""

from __future__ import annotations

import inspect
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from iris_service.settings import DEFAULT_GRPC_PORT

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s" / "base"
# Oldest supported minor version we target, and the newest the package knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def load_kustomization(folder: Path = K8S) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def render(folder: Path = K8S) -> list[dict]:
    """What `kubectl kustomize` gives for our kustomization: resources + labels + image."""
    kustomization = load_kustomization(folder)
    docs = [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((folder / name).read_text())
        if doc
    ]
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for doc in docs:
        for entry in kustomization.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
        for container in pod_spec(doc).get("containers", []):
            override = images.get(container["image"].split(":")[0])
            if override:
                container["image"] = f"{override['newName']}:{override['newTag']}"
    return docs


def pod_spec(doc: dict) -> dict:
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def by_kind(kind: str) -> dict:
    (doc,) = [d for d in render() if d["kind"] == kind]
    return doc


def service_port() -> int:
    """The port the API service listens on: configuration.yaml, else BentoML's default."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    config = yaml.safe_load((ROOT / "configuration.yaml").read_text()) or {}
    services = config.get("services", {})
    for scope in (services.get("IrisClassifier", {}), services):
        port = (scope.get("http") or {}).get("port")
        if port:
            return int(port)
    return int(BentoMLContainer.http.port.get())


def the_container() -> dict:
    (container,) = pod_spec(by_kind("Deployment"))["containers"]
    return container


def resolve_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return match


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_resource_validates(version: str) -> None:
    docs = render()
    assert {d["kind"] for d in docs} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "NetworkPolicy",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_invalid_manifest_is_rejected() -> None:
    """The validator really checks: a string where an integer belongs fails."""
    doc = by_kind("Deployment")
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_probes_use_bentoml_health_routes_on_the_service_port() -> None:
    from bentoml._internal.server import base_app

    routes = inspect.getsource(base_app)
    container = the_container()
    port = service_port()
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http_get = container[probe]["httpGet"]
        assert f'"{http_get["path"]}"' in routes, f"{probe}: BentoML serves no {http_get['path']}"
        assert resolve_port(container, http_get["port"]) == port, probe
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("http", port),
        ("grpc", DEFAULT_GRPC_PORT),
    ]


def test_probes_follow_the_runner_heartbeat() -> None:
    """Readiness drops well before liveness fails; liveness is checked only after the first
    readiness; a hung runner is restarted within a minute and a half."""
    from iris_service.settings import RUNNER_PING_PERIOD_SECONDS, settings

    container = the_container()
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    grace_s = int(env["IRIS_RUNNER_LIVENESS_GRACE_SECONDS"])
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    unready_after_s = readiness["periodSeconds"] * readiness["failureThreshold"]
    detected_s = RUNNER_PING_PERIOD_SECONDS + settings.runner_ping_timeout_seconds
    assert detected_s + unready_after_s < grace_s  # out of the Service well before a restart
    restarted_after_s = grace_s + liveness["periodSeconds"] * liveness["failureThreshold"]
    assert restarted_after_s <= 90


def test_service_reaches_the_pods() -> None:
    deployment, service = by_kind("Deployment"), by_kind("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    http, grpc = service["spec"]["ports"]
    assert resolve_port(the_container(), http["targetPort"]) == service_port()
    # gRPC (docs/protocols.md): named `grpc`, appProtocol grpc, so that meshes and ingresses
    # speak HTTP/2 to it.
    assert grpc["name"] == "grpc" and grpc["appProtocol"] == "grpc"
    assert resolve_port(the_container(), grpc["targetPort"]) == DEFAULT_GRPC_PORT


def test_ingress_reaches_the_service_with_the_fronts_limits() -> None:
    """The ingress-nginx annotations carry the limits of deploy/nginx/nginx.conf."""
    from iris_service.settings import settings
    from tools.front_proxy import directive, nginx_size

    ingress, service = by_kind("Ingress"), by_kind("Service")
    for path in ingress_paths():
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    notes = {
        key.removeprefix("nginx.ingress.kubernetes.io/"): value
        for key, value in ingress["metadata"]["annotations"].items()
    }
    assert nginx_size(notes["proxy-body-size"]) == settings.max_body_bytes
    assert notes["proxy-body-size"] == directive("client_max_body_size")
    assert notes["limit-connections"] == directive("limit_conn iris_per_client")
    per_client_rate = directive("limit_req_zone $binary_remote_addr zone=iris_rate_per_client:10m")
    assert per_client_rate == f"rate={notes['limit-rps']}r/s"
    assert notes["proxy-read-timeout"] + "s" == directive("proxy_read_timeout")
    assert int(notes["proxy-read-timeout"]) > service_timeout_s()


def test_ingress_controller_settings_close_slow_clients_like_the_front() -> None:
    from tools.front_proxy import directive

    (config,) = yaml.safe_load_all((K8S / "ingress-nginx-controller.yaml").read_text())
    kubernetes_validate.validate(config, K8S_VERSIONS[-1], strict=True)
    data = config["data"]
    assert data["client-header-timeout"] + "s" == directive("client_header_timeout")
    assert data["client-body-timeout"] + "s" == directive("client_body_timeout")
    assert data["limit-req-status-code"] == data["limit-conn-status-code"] == "429"


def service_timeout_s() -> float:
    config = yaml.safe_load((ROOT / "configuration.yaml").read_text())
    return float(config["services"]["IrisClassifier"]["traffic"]["timeout"])


def test_hpa_and_pdb_fit_the_deployment() -> None:
    deployment, hpa, pdb = (
        by_kind("Deployment"),
        by_kind("HorizontalPodAutoscaler"),
        by_kind("PodDisruptionBudget"),
    )
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # CPU utilization is a share of the request: without one the HPA cannot scale.
    assert "cpu" in the_container()["resources"]["requests"]
    assert (
        1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_resources_and_graceful_termination() -> None:
    container = the_container()
    resources = container["resources"]
    assert set(resources) == {"requests", "limits"}
    assert resources["requests"]["memory"] == resources["limits"]["memory"]  # no OOM surprises
    spec = pod_spec(by_kind("Deployment"))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert int(pre_stop[-1]) < spec["terminationGracePeriodSeconds"]


def test_pod_runs_as_the_images_non_root_user() -> None:
    from bentoml._internal.container.generate import BENTO_UID_GID

    security = pod_spec(by_kind("Deployment"))["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == BENTO_UID_GID != 0
    container_security = the_container()["securityContext"]
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"]["drop"] == ["ALL"]


def test_set_image_script_sets_name_and_tag(tmp_path: Path) -> None:
    folder = tmp_path / "k8s"
    shutil.copytree(K8S, folder)
    subprocess.run(
        [str(folder / "set-image.sh"), "registry.example.com:5000/iris_classifier:abc123"],
        check=True,
        capture_output=True,
    )
    (image,) = load_kustomization(folder)["images"]
    assert (image["newName"], str(image["newTag"])) == (
        "registry.example.com:5000/iris_classifier",
        "abc123",
    )
    deployment = next(d for d in render(folder) if d["kind"] == "Deployment")
    (container,) = pod_spec(deployment)["containers"]
    assert container["image"] == "registry.example.com:5000/iris_classifier:abc123"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
def test_kubectl_kustomize_agrees() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
    for doc in render():
        assert rendered[(doc["kind"], doc["metadata"]["name"])] == doc


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes byte quantity ("512Mi", "1Gi", "1000") in bytes."""
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * _UNITS[suffix])
    return int(quantity)


def env_of(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def test_env_names_are_settings_the_service_reads() -> None:
    from iris_service.settings import environment_names

    read = environment_names()
    for name in env_of(the_container()):
        assert name in read, f"{name} is not read by iris_service/settings.py"


def test_replicas_share_one_postgresql_store_from_a_required_secret() -> None:
    """Several replicas: the store is PostgreSQL from a Secret the pod cannot start without,
    and the service refuses a store only one pod could see."""
    assert by_kind("Deployment")["spec"]["replicas"] > 1
    env = env_of(the_container())
    reference = env["IRIS_RECORD_STORE_URL"]["valueFrom"]["secretKeyRef"]
    assert reference.get("optional", False) is False
    assert env["IRIS_RECORD_STORE_SHARED_REQUIRED"]["value"] == "true"
    example = yaml.safe_load((K8S / "record-store-secret.example.yaml").read_text())
    kubernetes_validate.validate(example, K8S_VERSIONS[-1], strict=True)
    assert example["kind"] == "Secret" and example["metadata"]["name"] == reference["name"]
    assert example["stringData"][reference["key"]].startswith("postgresql://")
    assert "record-store-secret.example.yaml" not in load_kustomization()["resources"]


def test_api_keys_come_from_a_required_secret() -> None:
    """No Secret, no pod; and the service itself requires a key (a blank one included)."""
    env = env_of(the_container())
    reference = env["IRIS_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert reference.get("optional", False) is False  # the pod does not start without it
    assert env["IRIS_API_KEYS_REQUIRED"]["value"] == "true"
    example = yaml.safe_load((K8S / "api-keys-secret.example.yaml").read_text())
    kubernetes_validate.validate(example, K8S_VERSIONS[-1], strict=True)
    assert example["kind"] == "Secret" and example["metadata"]["name"] == reference["name"]
    assert reference["key"] in example["stringData"]
    assert "api-keys-secret.example.yaml" not in load_kustomization()["resources"]


def test_quantities_are_read_in_bytes() -> None:
    assert quantity_bytes("512Mi") == 512 * 2**20
    assert quantity_bytes("1Gi") == 2**30 and quantity_bytes("1500") == 1500


def ingress_paths() -> list[dict]:
    ingress = by_kind("Ingress")
    return [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]


def ingress_routes(url_path: str) -> bool:
    """Whether the ingress sends `url_path` to a backend (Kubernetes' Exact and Prefix
    matching: a Prefix matches whole path elements)."""
    for path in ingress_paths():
        if path["pathType"] == "Exact" and url_path == path["path"]:
            return True
        if path["pathType"] == "Prefix":
            prefix = path["path"].rstrip("/")
            if url_path == prefix or url_path.startswith(prefix + "/"):
                return True
        assert path["pathType"] in ("Exact", "Prefix"), path  # no implementation-specific rules
    return False


def test_the_ingress_routes_the_api_but_not_metrics_or_probes() -> None:
    for private in ("/metrics", "/metrics/", "/livez", "/readyz", "/healthz", "/metricsx"):
        assert not ingress_routes(private), private
    for public in (
        "/predict",
        "/predict_batch",
        "/explain",
        "/feedback",
        "/invocations",
        "/v2/models/iris-classifier/infer",
        "/v2/health/ready",
        "/model",
        "/",
        "/docs.json",
    ):
        assert ingress_routes(public), public


def test_the_ingress_paths_are_routes_of_the_service() -> None:
    """Each Exact path is a route the service declares (so a renamed route shows here)."""
    sources = "".join(
        (ROOT / name).read_text()
        for name in (
            "service.py",
            "iris_service/protocols/routes.py",
            "iris_service/monitoring/drift.py",
            "iris_service/monitoring/live_quality.py",
            "iris_service/http/model_status.py",
        )
    )
    builtin = {"/", "/docs.json", "/schema.json"}  # BentoML's docs
    for path in ingress_paths():
        if path["pathType"] == "Exact" and path["path"] not in builtin:
            assert f'"{path["path"]}"' in sources, path["path"]


def test_the_root_file_system_is_read_only_with_volumes_where_the_server_writes() -> None:
    from tools.containers import RUNTIME_HOME

    container = the_container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {RUNTIME_HOME, "/tmp"}  # BentoML's home, tmp
    volumes = {v["name"]: v for v in pod_spec(by_kind("Deployment"))["volumes"]}
    assert set(volumes) == set(mounts.values())
    for volume in volumes.values():  # scratch space of bounded size, nothing from the host
        assert set(volume) == {"name", "emptyDir"} and "sizeLimit" in volume["emptyDir"]
    total = sum(quantity_bytes(v["emptyDir"]["sizeLimit"]) for v in volumes.values())
    assert total < quantity_bytes(container["resources"]["requests"]["ephemeral-storage"])


def test_a_network_policy_admits_only_the_ingress_controller_and_prometheus() -> None:
    policy, deployment = by_kind("NetworkPolicy"), by_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    namespaces = set()
    for peer in rule["from"]:
        assert set(peer) == {"namespaceSelector"}, peer  # no ipBlock, no open peer
        namespaces.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    assert namespaces == {"ingress-nginx", "monitoring"}
    ingress_controller = yaml.safe_load((K8S / "ingress-nginx-controller.yaml").read_text())
    assert ingress_controller["metadata"]["namespace"] in namespaces
    ports = {resolve_port(the_container(), port["port"]) for port in rule["ports"]}
    assert ports == {service_port(), DEFAULT_GRPC_PORT}
