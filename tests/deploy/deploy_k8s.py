"""Render the kustomize overlays and validate what they produce, offline (no cluster, no network).

Helpers for the tests in this folder: `render(name)` runs `kubectl kustomize` once per overlay;
`core_errors` validates core resources with kubernetes-validate; `custom_errors` validates custom
resources with our own schemas in deploy/k8s/schemas.
"""
from __future__ import annotations

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
