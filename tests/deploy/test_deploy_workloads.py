"""The pods as rendered: each service runs its subcommand with probes on its metrics port, bounded
resources, time to commit on SIGTERM, restricted security, valid config, and secrets by reference (the
logins themselves, Kafka's and Redis's, are checked in test_deploy_security.py)."""
from __future__ import annotations

import dataclasses
import importlib
import re

import pytest

from deploy_k8s import OVERLAYS, facestream_deployments, kind, named, pod_spec, render, stage_of
from services.cli import COMMANDS
from shared.config import BaseConfig, load

STAGES = {"ingest", "detector", "embedder", "matcher"}
# shared/kafka_loop.py waits up to 30 s for the broker's acknowledgements of a batch before committing,
# then closes the producer with a 10 s timeout: SIGTERM must leave at least that much time.
COMMIT_BUDGET_S = 30 + 10


def _container(d: dict) -> dict:
    (c,) = pod_spec(d)["containers"]
    return c


def _env(docs, d: dict) -> dict[str, str]:
    """The pod's FACESTREAM_* environment: its ConfigMaps, then its own env (which wins)."""
    env = {}
    for source in _container(d).get("envFrom", []):
        env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in _container(d).get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_deployment_per_service_running_its_subcommand(overlay):
    deployments = facestream_deployments(render(overlay))
    assert {stage_of(d) for d in deployments} == STAGES
    for d in deployments:
        args = _container(d)["args"]
        assert args[0] == stage_of(d) and args[0] in COMMANDS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_the_health_endpoints_on_the_metrics_port(overlay):
    for d in facestream_deployments(render(overlay)):
        c = _container(d)
        (port_flag,) = [a for a in c["args"] if a.startswith("--metrics-port=")]
        (port,) = [p for p in c["ports"] if p["name"] == "metrics"]
        assert int(port_flag.split("=")[1]) == port["containerPort"]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path and get["port"] in ("metrics", port["containerPort"]), (stage_of(d), probe)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_grace_and_image(overlay):
    for d in facestream_deployments(render(overlay)):
        c = _container(d)
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][bound]), (stage_of(d), bound)
        assert pod_spec(d)["terminationGracePeriodSeconds"] >= COMMIT_BUDGET_S
        image = c["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_meet_the_restricted_pod_security_standard(overlay):
    docs = render(overlay)
    for d in facestream_deployments(docs) + kind(docs, "StatefulSet"):
        pod, c = pod_spec(d), _container(d)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["automountServiceAccountToken"] is False


def _config_class(stage: str) -> type:
    """The settings dataclass that `facestream <stage>` loads (declared in the services/<stage> package)."""
    module = importlib.import_module(COMMANDS[stage][0])
    (cls,) = [c for c in vars(module).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
              and issubclass(c, BaseConfig) and c.__module__.startswith(f"services.{stage}.")]
    return cls


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_flags_and_env_are_settings_the_service_accepts(overlay, stage):
    docs = render(overlay)
    (d,) = [d for d in facestream_deployments(docs) if stage_of(d) == stage]
    cls = _config_class(stage)
    env = _env(docs, d)
    known = {"FACESTREAM_" + f.name.upper() for f in dataclasses.fields(cls)}
    file_refs = {k for k in env if k.endswith("_FILE")}
    unknown = {k for k in env
               if k.startswith("FACESTREAM_") and k not in known and k.removesuffix("_FILE") not in known}
    assert unknown == set(), f"{stage} reads no such setting"
    # shared/config.py parses the pod's flags and checks types and bounds exactly as the service will at
    # start; the *_FILE secrets are left out (their files exist only in the pod).
    load(cls, _container(d)["args"][1:], env={k: v for k, v in env.items() if k not in file_refs})
    mounts = [m["mountPath"] for m in _container(d).get("volumeMounts", [])]
    for k in file_refs:
        assert any(env[k].startswith(m.rstrip("/") + "/") for m in mounts), f"{k} is not in a mounted volume"
    # A plain value would win over its *_FILE (shared/config.py): secrets are given as files only.
    assert {k for k in env if k.endswith("_PASSWORD")} == set(), "a password in the pod's environment"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingest_accepts_the_cameras_it_is_given(overlay, tmp_path):
    docs = render(overlay)
    ingest = named(docs, "Deployment", "facestream-ingest")
    (flag,) = [a for a in _container(ingest)["args"] if a.startswith("--cameras-file=")]
    path = flag.split("=", 1)[1]
    # The file comes from a ConfigMap volume mounted where the flag says.
    (mount,) = [m for m in _container(ingest)["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    (volume,) = [v for v in pod_spec(ingest)["volumes"] if v["name"] == mount["name"]]
    data = named(docs, "ConfigMap", volume["configMap"]["name"])["data"]
    local = tmp_path / "cameras.yaml"
    local.write_text(data[path.rsplit("/", 1)[1]])
    from services.ingest.config import IngestConfig, load_cameras
    cfg = load(IngestConfig, [a for a in _container(ingest)["args"][1:] if a != flag] + [f"--cameras-file={local}"],
               env={})
    assert load_cameras(cfg)  # what the ingest pod does at start: unknown keys or bad ids are refused


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_keeps_the_gallery_on_a_volume(overlay):
    redis = named(render(overlay), "StatefulSet", "facestream-redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in _container(redis)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_cover_each_service_and_allow_drains(overlay):
    docs = render(overlay)
    pdbs = kind(docs, "PodDisruptionBudget")
    for d in facestream_deployments(docs):
        labels = d["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, stage_of(d)
        assert covering[0]["spec"].get("maxUnavailable", 0) >= 1, "a budget of zero blocks every node drain"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_podmonitor_scrapes_every_service(overlay):
    docs = render(overlay)
    (monitor,) = kind(docs, "PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for d in facestream_deployments(docs):
        assert selector <= d["spec"]["template"]["metadata"]["labels"].items(), stage_of(d)
        assert endpoint["port"] in {p["name"] for p in _container(d)["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gpu_overlay_puts_the_embedder_on_a_gpu(overlay):
    for d in facestream_deployments(render(overlay)):
        resources = _container(d)["resources"]
        gpus = {b: int(resources[b].get("nvidia.com/gpu", 0)) for b in ("requests", "limits")}
        if overlay == "gpu" and stage_of(d) == "embedder":
            assert gpus == {"requests": 1, "limits": 1}
            assert _container(d)["image"].split(":")[0].endswith("facestream-cuda")
        else:
            assert gpus == {"requests": 0, "limits": 0}, stage_of(d)
            assert "cuda" not in _container(d)["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_the_facestream_namespace(overlay):
    docs = render(overlay)
    (namespace,) = kind(docs, "Namespace")
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == namespace["metadata"]["name"], d["metadata"]["name"]
