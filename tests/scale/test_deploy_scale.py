"""The scale-out recipe (deploy/): every file parses, the keys the recipe relies on are there, the
Serve config passes Ray's own schema, names every registered task, and its import path builds
each task's application. (Docker and Kubernetes are not available here: nothing is started.)"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core import registry

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


def test_every_yaml_file_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {f.name for f in files} >= {"compose.yaml", "serve_config.yaml", "rayservice.yaml", "front.yaml"}
    for f in files:
        assert _load_all(f), f"{f} is empty"


def test_serve_config_covers_every_task_and_passes_rays_schema():
    pytest.importorskip("ray.serve")
    from ray.serve.schema import ServeDeploySchema

    from scale import backend
    from scale.deployments import class_name

    config = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    apps = {a["name"]: a for a in config["applications"]}
    assert set(apps) == {backend.app_name(k) for k in registry.KEYS}
    for key in registry.KEYS:
        app = apps[backend.app_name(key)]
        assert app["import_path"] == "scale.deployments:app_builder" and app["args"] == {"task": key}
        assert app["route_prefix"] is None
        (dep,) = app["deployments"]
        assert dep["name"] == class_name(key)
        scaling = dep["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"]
        assert dep["max_queued_requests"] > 0 and dep["ray_actor_options"]["num_cpus"] > 0
        if "user_config" in dep:  # micro-batched tasks: a replica must hold more than one batch in flight
            assert dep["max_ongoing_requests"] > dep["user_config"]["batch_size"]


def test_app_builder_builds_each_configured_application():
    pytest.importorskip("ray.serve")
    from ray.serve import Application

    from scale.deployments import app_builder, class_name

    for key in ("sentiment", "qa", "asr"):
        app = app_builder({"task": key})
        assert isinstance(app, Application)
        assert app._bound_deployment.name == class_name(key)


def test_rayservice_embeds_the_serve_config_and_bounds_the_cluster():
    docs = _by_kind(_load_all(DEPLOY / "k8s" / "rayservice.yaml"))
    service = docs["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (workers,) = cluster["workerGroupSpecs"]
    assert 1 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    env = {e["name"] for e in workers["template"]["spec"]["containers"][0]["env"]}
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "HF_HOME", "XRAY_SHIP_DIR"} <= env


def test_front_has_replicas_affinity_and_probes():
    docs = _by_kind(_load_all(DEPLOY / "k8s" / "front.yaml"))
    deployment, service, ingress = docs["Deployment"], docs["Service"], docs["Ingress"]
    assert deployment["spec"]["replicas"] >= 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["XRAY_BACKEND"] == "ray://xray-model-tier-head-svc:10001"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == deployment["spec"]["replicas"]


def test_compose_has_the_tiers_sticky_balancer_and_health_checks():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"traefik", "front", "ray-head", "ray-worker", "serve-deploy"}
    front = services["front"]
    assert front["environment"]["XRAY_BACKEND"] == "ray://ray-head:10001"
    assert front["deploy"]["replicas"] >= 2 and "healthcheck" in front
    assert "traefik.http.services.xray.loadbalancer.sticky.cookie=true" in front["labels"]
    assert "healthcheck" in services["ray-head"] and "--num-cpus=0" in services["ray-head"]["command"]
    assert services["serve-deploy"]["command"][:3] == ["serve", "deploy", "deploy/serve_config.yaml"]
    assert (ROOT / services["serve-deploy"]["command"][2]).is_file()
    # every service shares the image, the model cache and the shipped-uploads volume
    for name in ("front", "ray-head", "ray-worker", "serve-deploy"):
        assert services[name]["image"] == "transformer-xray-scale:latest"
        assert {"model-cache:/home/user/.cache", "shipped:/home/user/shared"} <= set(services[name]["volumes"])
