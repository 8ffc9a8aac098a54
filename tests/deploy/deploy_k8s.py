"""Render the kustomize overlays and validate what they produce, offline (no cluster, no network).

Helpers for the tests in this folder: `render(name)` runs `kubectl kustomize` once per overlay;
`core_errors` validates core resources with kubernetes-validate; `custom_errors` validates custom
resources with our own schemas in deploy/k8s/schemas; `secret_behind(pod, path)` names the Secret key a
file in a pod comes from; `made_secrets()` runs deploy/k8s/secrets/make-secrets.sh once and decodes what
it prints.
"""
from __future__ import annotations

import base64
import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
MAKE_SECRETS = K8S / "secrets" / "make-secrets.sh"
REDIS_ACL_TEMPLATE = K8S / "secrets" / "redis-users.acl"
# Every kustomization an operator may apply; each is rendered and checked.
OVERLAYS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "gpu": K8S / "overlays" / "gpu",
    "no-keda": K8S / "examples" / "no-keda",
}
# Validate against an explicit range, not whatever the installed kubernetes-validate calls latest:
# the oldest Kubernetes we claim to support (it matches the kubectl 1.32 used to render) and the newest.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
# API groups served by operators (Strimzi, KEDA, Prometheus operator): checked with our schemas.
CUSTOM_GROUPS = {"kafka.strimzi.io", "keda.sh", "monitoring.coreos.com"}
# The overlays meant for a cluster of several brokers (dev runs one).
PRODUCTION_OVERLAYS = [o for o in OVERLAYS if o != "dev"]


def tool(name: str) -> str:
    """The path of a command-line tool; the test fails (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: the deployment checks need it (scripts/setup.sh installs it)")
    return path


@functools.lru_cache(maxsize=None)
def render(name: str) -> tuple[dict, ...]:
    """The resources `kubectl kustomize` renders for one overlay (cached: rendering takes ~0.3 s)."""
    out = subprocess.run([tool("kubectl"), "kustomize", str(OVERLAYS[name])],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        pytest.fail(f"kubectl kustomize {OVERLAYS[name]} failed:\n{out.stderr}")
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def group(doc: dict) -> str:
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def kind(docs: Iterable[dict], k: str) -> list[dict]:
    return [d for d in docs if d["kind"] == k]


def named(docs: Iterable[dict], k: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == k and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {k} named {name}, found {len(found)}"
    return found[0]


def ref(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def core_errors(docs: Iterable[dict], version: str) -> list[str]:
    """kubernetes-validate --strict on every resource outside CUSTOM_GROUPS; an unknown kind is an error."""
    errors = []
    for doc in docs:
        if group(doc) in CUSTOM_GROUPS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{ref(doc)}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{ref(doc)}: {e.message}")
    return errors


@functools.lru_cache(maxsize=None)
def _custom_schemas() -> tuple[Registry, dict[tuple[str, str], dict]]:
    """Our schemas, keyed by (apiVersion, kind) from their `const`s, and a registry for their $refs."""
    registry: Registry = Registry()
    by_type = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        schema = yaml.safe_load(path.read_text())
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
        props = schema.get("properties", {})
        if "kind" in props:
            by_type[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return registry.crawl(), by_type


def custom_validator(api_version: str, k: str) -> jsonschema.protocols.Validator | None:
    registry, by_type = _custom_schemas()
    schema = by_type.get((api_version, k))
    if schema is None:
        return None
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


def custom_errors(doc: dict) -> list[str]:
    """Every violation of our schema by one custom resource; a resource with no schema is an error."""
    validator = custom_validator(doc["apiVersion"], doc["kind"])
    if validator is None:
        return [f"{ref(doc)}: no schema for {doc['apiVersion']} {doc['kind']} in {SCHEMAS}"]
    return [f"{ref(doc)}: {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def pod_spec(doc: dict) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def facestream_deployments(docs: Iterable[dict]) -> list[dict]:
    """The Deployments of the four services (label app.kubernetes.io/name=facestream)."""
    return [d for d in kind(docs, "Deployment")
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "facestream"]


def stage_of(deployment: dict) -> str:
    return deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def container(deployment: dict) -> dict[str, Any]:
    (c,) = pod_spec(deployment)["containers"]
    return c


def env_values(docs: Iterable[dict], deployment: dict) -> dict[str, str]:
    """The pod's environment as written: its ConfigMaps (envFrom), then its own `value`s (which win).
    Values from `valueFrom` (the downward API) are left out."""
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container(deployment).get("env", []) if "value" in e})
    return env


def group_id(deployment: dict) -> str:
    """shared/service.py: `cfg.group_id or f"facestream-{stage}"`; group_id comes from FACESTREAM_GROUP_ID."""
    env = {e["name"]: e.get("value") for e in container(deployment).get("env", [])}
    return env.get("FACESTREAM_GROUP_ID") or f"facestream-{stage_of(deployment)}"


def volume_secrets(volume: dict) -> list[tuple[str, str, str]]:
    """(path in the volume, Secret name, key) of every file a volume takes from a Secret."""
    sources = [volume["secret"] | {"name": volume["secret"]["secretName"]}] if "secret" in volume else [
        src["secret"] for src in volume.get("projected", {}).get("sources", []) if "secret" in src]
    files = []
    for src in sources:
        # without `items` every key is a file of its own name (we always list them: keys can be added)
        for item in src.get("items", []):
            files.append((item["path"], src["name"], item["key"]))
    return files


def secret_behind(pod: dict[str, Any], c: dict[str, Any], path: str) -> tuple[str, str] | None:
    """(Secret, key) whose value the container reads at `path`, or None when no Secret volume is there."""
    for mount in c.get("volumeMounts", []):
        base = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(base):
            continue
        for volume in [v for v in pod.get("volumes", []) if v["name"] == mount["name"]]:
            for file, name, key in volume_secrets(volume):
                if path[len(base):] == file:
                    return name, key
    return None


def secret_mounts(pod: dict[str, Any], c: dict[str, Any]) -> list[tuple[dict, dict]]:
    """(volumeMount, volume) of every volume of the container that holds a Secret's keys."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}   # a StatefulSet's claims are not among them
    return [(m, volumes[m["name"]]) for m in c.get("volumeMounts", [])
            if m["name"] in volumes and volume_secrets(volumes[m["name"]])]


def referenced_secrets(docs: Iterable[dict]) -> set[tuple[str, str]]:
    """Every (Secret, key) a rendered overlay refers to: pod volumes, env references, KEDA's credentials."""
    refs = set()
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            pod = pod_spec(d)
            for v in pod.get("volumes", []):
                refs |= {(name, key) for _, name, key in volume_secrets(v)}
            for c in pod["containers"] + pod.get("initContainers", []):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        refs.add((ref["name"], ref["key"]))
        elif d["kind"] == "TriggerAuthentication":
            refs |= {(r["name"], r["key"]) for r in d["spec"].get("secretTargetRef", [])}
    return refs


def strimzi_secrets(docs: Iterable[dict]) -> set[tuple[str, str]]:
    """The Secrets (and keys) Strimzi's operators create for the rendered Kafka: the cluster CA's public
    certificate and, per SCRAM KafkaUser, its password."""
    (kafka,) = kind(docs, "Kafka")
    made = {(f"{kafka['metadata']['name']}-cluster-ca-cert", "ca.crt")}
    for user in kind(docs, "KafkaUser"):
        if user["spec"].get("authentication", {}).get("type") == "scram-sha-512":
            made.add((user["metadata"]["name"], "password"))
    return made


@functools.lru_cache(maxsize=None)
def made_secrets() -> dict[str, dict[str, bytes]]:
    """What deploy/k8s/secrets/make-secrets.sh prints, decoded: {Secret name: {key: value}}. Run once
    (about 0.1 s: openssl makes a CA, a certificate and the passwords); nothing is written to disk here."""
    tool("openssl")
    out = subprocess.run(["sh", str(MAKE_SECRETS)], capture_output=True, timeout=60)
    if out.returncode != 0:
        pytest.fail(f"{MAKE_SECRETS} failed:\n{out.stderr.decode()}")
    (namespace,) = kind(render("base"), "Namespace")
    secrets = {}
    for doc in yaml.safe_load_all(out.stdout):
        if doc:
            assert doc["kind"] == "Secret" and doc["apiVersion"] == "v1", doc.get("kind")
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], doc["metadata"]["name"]
            secrets[doc["metadata"]["name"]] = {k: base64.b64decode(v) for k, v in doc["data"].items()}
    return secrets


def acl_lines(text: str) -> list[list[str]]:
    """The `user NAME RULE...` lines of a Redis ACL file (the template's comment and blank lines dropped,
    as make-secrets.sh drops them), each split into words."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
