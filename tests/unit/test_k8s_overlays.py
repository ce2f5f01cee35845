"""deploy/k8s/overlays: the two shapes of the same image, rendered by the real
`kubectl kustomize` and validated offline against the Kubernetes schemas.

`single` is the base as it is. `tiers` adds a runner Deployment with its Service, HPA,
PodDisruptionBudget and a NetworkPolicy that admits only the API pods to the runner's port;
both Deployments run the same image with the `start-http-server` arguments that
tools/serve_tiers.py (make serve-tiers) runs locally, and the API's --depends names the
runner's Service by a URL the start-up check accepts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from iris_service.inference.runner_address import (
    API_SERVICE,
    RUNNER_SERVICE,
    check_depends,
    parse_depends,
)
from tests.unit.test_k8s_manifests import K8S_VERSIONS, pod_spec, resolve_port
from tools.serve_tiers import start_http_server_args

OVERLAYS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays"
KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}

pytestmark = pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")


def kustomize(folder: Path) -> dict[tuple[str, str], dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def by_name(docs: dict[tuple[str, str], dict], kind: str) -> dict[str, dict]:
    return {name: doc for (k, name), doc in docs.items() if k == kind}


def container(deployment: dict) -> dict:
    (only,) = pod_spec(deployment)["containers"]
    return only


@pytest.mark.parametrize("shape", ["single", "tiers"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_each_shape_renders_and_validates(shape: str, version: str) -> None:
    docs = kustomize(OVERLAYS / shape)
    assert docs
    for doc in docs.values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_single_is_the_base_and_deploy_k8s_itself() -> None:
    single = kustomize(OVERLAYS / "single")
    assert single == kustomize(OVERLAYS.parent)
    assert len(by_name(single, "Deployment")) == 1
    assert "args" not in container(next(iter(by_name(single, "Deployment").values())))


def test_tiers_has_two_deployments_each_with_service_hpa_and_pdb() -> None:
    docs = kustomize(OVERLAYS / "tiers")
    deployments = by_name(docs, "Deployment")
    assert set(deployments) == {"iris-classifier", "iris-model-runner"}
    images = {container(d)["image"] for d in deployments.values()}
    assert len(images) == 1  # one image, two shapes
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (service,) = [
            s
            for s in by_name(docs, "Service").values()
            if s["spec"]["selector"].items() <= labels.items()
        ]
        assert resolve_port(container(deployment), service["spec"]["ports"][0]["targetPort"])
        (hpa,) = [
            h
            for h in by_name(docs, "HorizontalPodAutoscaler").values()
            if h["spec"]["scaleTargetRef"]["name"] == name
        ]
        (pdb,) = [
            p
            for p in by_name(docs, "PodDisruptionBudget").values()
            if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_tiers_run_the_start_http_server_commands_of_make_serve_tiers() -> None:
    docs = kustomize(OVERLAYS / "tiers")
    deployments = by_name(docs, "Deployment")
    runner_service = by_name(docs, "Service")["iris-model-runner"]
    runner_url = f"http://iris-model-runner:{runner_service['spec']['ports'][0]['port']}"
    api_args = container(deployments["iris-classifier"])["args"]
    runner_args = container(deployments["iris-model-runner"])["args"]

    def without_host(args: list[str]) -> list[str]:
        index = args.index("--host")
        return args[:index] + args[index + 2 :]

    local_api = start_http_server_args(API_SERVICE, 3000, runner_url=runner_url)
    assert sorted(api_args) == sorted(without_host(local_api))
    assert sorted(runner_args) == sorted(without_host(start_http_server_args(RUNNER_SERVICE, 3000)))
    depends = parse_depends([api_args[api_args.index("--depends") + 1]])
    check_depends(API_SERVICE, depends, [RUNNER_SERVICE], resolve=False)


def test_only_api_pods_reach_the_runner_and_the_api_keeps_its_policy() -> None:
    docs = kustomize(OVERLAYS / "tiers")
    deployments = by_name(docs, "Deployment")
    api_labels = deployments["iris-classifier"]["spec"]["template"]["metadata"]["labels"]
    runner = deployments["iris-model-runner"]
    runner_labels = runner["spec"]["template"]["metadata"]["labels"]
    policies = by_name(docs, "NetworkPolicy")
    (runner_policy,) = [
        p
        for p in policies.values()
        if p["spec"]["podSelector"]["matchLabels"].items() <= runner_labels.items()
    ]
    assert runner_policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = runner_policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # same namespace, no namespace or ipBlock peer
    selector = peer["podSelector"]["matchLabels"]
    assert selector.items() <= api_labels.items()
    assert not selector.items() <= runner_labels.items()
    (port,) = rule["ports"]
    assert resolve_port(container(runner), port["port"]) == 3000
    # The API's own policy (ingress controller and Prometheus only) selects the API pods only.
    (api_policy,) = [
        p
        for p in policies.values()
        if p["spec"]["podSelector"]["matchLabels"].items() <= api_labels.items()
    ]
    assert {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in api_policy["spec"]["ingress"][0]["from"]
    } == {"ingress-nginx", "monitoring"}


def test_set_image_sets_both_tiers(tmp_path: Path) -> None:
    folder = tmp_path / "k8s"
    shutil.copytree(OVERLAYS.parent, folder)
    subprocess.run(
        [str(folder / "base" / "set-image.sh"), "registry.example.com/iris_classifier:abc123"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    deployments = by_name(kustomize(folder / "overlays" / "tiers"), "Deployment")
    assert {container(d)["image"] for d in deployments.values()} == {
        "registry.example.com/iris_classifier:abc123"
    }


def test_the_runners_env_names_are_settings_the_service_reads() -> None:
    from iris_service.settings import environment_names

    read = environment_names()
    runner = by_name(kustomize(OVERLAYS / "tiers"), "Deployment")["iris-model-runner"]
    names = [item["name"] for item in container(runner)["env"]]
    assert "IRIS_API_KEYS_REQUIRED" in names  # the image requires keys by default
    for name in names:
        assert name in read, f"{name} is not read by iris_service/settings.py"
