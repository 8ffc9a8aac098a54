"""Every overlay renders, and every resource in it is valid: core resources against the Kubernetes
schemas (kubernetes-validate --strict), custom resources against our schemas of the operators' APIs."""
from __future__ import annotations

import copy

import pytest

from deploy_k8s import (CUSTOM_GROUPS, KUBERNETES_VERSIONS, OVERLAYS, core_errors, custom_errors, group, kind,
                        named, render)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_resources_are_valid_kubernetes(overlay, version):
    docs = render(overlay)
    assert any(group(d) not in CUSTOM_GROUPS for d in docs)
    assert core_errors(docs, version) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_the_operators_apis(overlay):
    docs = [d for d in render(overlay) if group(d) in CUSTOM_GROUPS]
    kinds = {d["kind"] for d in docs}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "PodMonitor", "PrometheusRule"} <= kinds
    if overlay != "no-keda":
        assert {"ScaledObject", "TriggerAuthentication"} <= kinds
    assert [e for d in docs for e in custom_errors(d)] == []


def test_core_validation_rejects_an_unknown_field():
    # The strict schemas are what catches a misspelt field; make sure they are in use.
    deployment = copy.deepcopy(named(render("base"), "Deployment", "facestream-detector"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    (error,) = core_errors([deployment], KUBERNETES_VERSIONS[0])
    assert "livenessProbes" in error


def test_core_validation_refuses_a_kind_it_cannot_check():
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    (error,) = core_errors([unknown], KUBERNETES_VERSIONS[0])
    assert "Couldn't find schema" in error


def _mutated(kind_name: str, change) -> dict:
    doc = copy.deepcopy(kind(render("base"), kind_name)[0])
    change(doc)
    return doc


# Each case is a mistake our schemas must catch, most of them fields that Strimzi 1.0 removed.
SCHEMA_MUST_REJECT = {
    "v1beta2 is gone in Strimzi 1.0": ("KafkaTopic", lambda d: d.update(apiVersion="kafka.strimzi.io/v1beta2")),
    "KafkaTopic without spec": ("KafkaTopic", lambda d: d.pop("spec")),
    "Kafka with ZooKeeper": ("Kafka", lambda d: d["spec"].update(zookeeper={"replicas": 3})),
    "listener name too long": ("Kafka", lambda d: d["spec"]["kafka"]["listeners"][0].update(name="plaintextlistener")),
    "oauth authentication": ("Kafka", lambda d: d["spec"]["kafka"]["listeners"][0].update(
        authentication={"type": "oauth"})),
    "scram listener with a field of another type": ("Kafka", lambda d: d["spec"]["kafka"]["listeners"][0][
        "authentication"].update(sasl=True)),
    "keycloak authorization (gone in v1)": ("Kafka", lambda d: d["spec"]["kafka"].update(
        authorization={"type": "keycloak"})),
    "network policy peer that is no peer": ("Kafka", lambda d: d["spec"]["kafka"]["listeners"][0].update(
        networkPolicyPeers=[{"pods": {"app": "x"}}])),
    "ACL rule with v1beta2's single operation": ("KafkaUser", lambda d: d["spec"]["authorization"]["acls"][0].update(
        operation="Write")),
    "ACL rule without operations": ("KafkaUser", lambda d: d["spec"]["authorization"]["acls"][0].pop("operations")),
    "unknown ACL operation": ("KafkaUser", lambda d: d["spec"]["authorization"]["acls"][0].update(
        operations=["Produce"])),
    "ACL on an unknown resource type": ("KafkaUser", lambda d: d["spec"]["authorization"]["acls"][0]["resource"].update(
        type="consumerGroup")),
    "ACL on a named cluster": ("KafkaUser", lambda d: d["spec"]["authorization"]["acls"][0]["resource"].update(
        type="cluster")),
    "KafkaUser with scram-sha-256": ("KafkaUser", lambda d: d["spec"]["authentication"].update(type="scram-sha-256")),
    "KafkaUser without spec": ("KafkaUser", lambda d: d.pop("spec")),
    "secretTargetRef without key": ("TriggerAuthentication", lambda d: d["spec"]["secretTargetRef"][0].pop("key")),
    "kafka trigger with Strimzi's spelling of sasl": ("ScaledObject", lambda d: d["spec"]["triggers"][0][
        "metadata"].update(sasl="scram-sha-512")),
    "node pool without roles": ("KafkaNodePool", lambda d: d["spec"].pop("roles")),
    "storage overrides": ("KafkaNodePool", lambda d: d["spec"]["storage"]["volumes"][0].update(
        overrides=[{"broker": 0, "class": "fast"}])),
    "misspelt lagThreshold": ("ScaledObject", lambda d: d["spec"]["triggers"][0]["metadata"].update(
        lagTreshold="5")),
    "kafka trigger without consumerGroup": ("ScaledObject", lambda d: d["spec"]["triggers"][0]["metadata"].pop(
        "consumerGroup")),
    "numeric trigger metadata": ("ScaledObject", lambda d: d["spec"]["triggers"][0]["metadata"].update(
        lagThreshold=50)),
    "cpu trigger without metricType": ("ScaledObject", lambda d: d["spec"]["triggers"][1].pop("metricType")),
    "cpu trigger with a percent sign": ("ScaledObject", lambda d: d["spec"]["triggers"][1]["metadata"].update(
        value="80%")),
    "PodMonitor without selector": ("PodMonitor", lambda d: d["spec"].pop("selector")),
    "scrape interval not a duration": ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(
        interval="15 seconds")),
    "rule with neither alert nor record": ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop(
        "alert")),
}


@pytest.mark.parametrize("case", SCHEMA_MUST_REJECT)
def test_custom_schemas_reject_known_mistakes(case):
    kind_name, change = SCHEMA_MUST_REJECT[case]
    assert custom_errors(_mutated(kind_name, change)) != []
