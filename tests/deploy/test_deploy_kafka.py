"""Kafka as deployed agrees with the code: the topics of shared/topics.py, replication that the brokers
can hold, and autoscaling that never asks for more consumers than a topic has partitions."""
from __future__ import annotations

import pytest

from deploy_k8s import OVERLAYS, facestream_deployments, group_id, kind, named, render, stage_of
from shared import topics

# Which topic each consuming stage reads (shared/kafka_loop.Stage.input_topic of each service).
STAGE_INPUT = {"detector": topics.FRAMES.name, "embedder": topics.FACES.name, "matcher": topics.EMBEDDINGS.name}
KAFKA_DEFAULT_SEGMENT_MS = 7 * 24 * 3600 * 1000
KEDA_OVERLAYS = [o for o in OVERLAYS if o != "no-keda"]


def _topics(docs) -> dict[str, dict]:
    return {t["spec"].get("topicName", t["metadata"]["name"]): t for t in kind(docs, "KafkaTopic")}


def _kafka(docs) -> dict:
    (k,) = kind(docs, "Kafka")
    return k


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_kafkatopic_per_topic_with_its_partitions_and_retention(overlay):
    deployed = _topics(render(overlay))
    assert set(deployed) == {t.name for t in topics.ALL}
    for t in topics.ALL:
        spec = deployed[t.name]["spec"]
        assert spec["partitions"] == t.partitions, t.name
        assert int(spec["config"]["retention.ms"]) == t.retention_ms, t.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retention_can_take_effect(overlay):
    # Kafka deletes whole segments: a segment that rolls less often than the retention keeps data longer.
    for name, t in _topics(render(overlay)).items():
        config = t["spec"]["config"]
        assert int(config.get("segment.ms", KAFKA_DEFAULT_SEGMENT_MS)) <= int(config["retention.ms"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_node_pools_and_topics_belong_to_the_kafka_cluster(overlay):
    docs = render(overlay)
    cluster = _kafka(docs)["metadata"]["name"]
    for doc in kind(docs, "KafkaNodePool") + kind(docs, "KafkaTopic"):
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == cluster, doc["metadata"]["name"]
    roles = {r for p in kind(docs, "KafkaNodePool") if p["spec"]["replicas"] > 0 for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}  # KRaft: controllers and brokers, no ZooKeeper


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replication_fits_the_brokers(overlay):
    # acks=all producers fail when a topic wants more in-sync replicas than it has, or than there are brokers.
    docs = render(overlay)
    brokers = sum(p["spec"]["replicas"] for p in kind(docs, "KafkaNodePool") if "broker" in p["spec"]["roles"])
    config = _kafka(docs)["spec"]["kafka"].get("config", {})
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        assert int(config.get(key, 1)) <= brokers, key
    for name, t in _topics(docs).items():
        replicas = t["spec"].get("replicas", int(config.get("default.replication.factor", 1)))
        min_isr = int(t["spec"]["config"].get("min.insync.replicas", config.get("min.insync.replicas", 1)))
        assert min_isr <= replicas <= brokers, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_scaler_reach_the_bootstrap_service(overlay):
    docs = render(overlay)
    kafka = _kafka(docs)
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap"
    namespace = kafka["metadata"]["namespace"]
    # only a listener with TLS and a SCRAM login will do (test_deploy_security.py checks there is no other)
    ports = {str(listener["port"]) for listener in kafka["spec"]["kafka"]["listeners"]
             if listener["tls"] and listener.get("authentication", {}).get("type") == "scram-sha-512"}
    assert ports
    (config,) = [c for c in kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("facestream-config")]
    host, port = config["data"]["FACESTREAM_KAFKA_BOOTSTRAP"].split(":")
    assert host == bootstrap and port in ports
    for so in kind(docs, "ScaledObject"):
        # KEDA's operator runs in another namespace: the address must name ours.
        host, port = so["spec"]["triggers"][0]["metadata"]["bootstrapServers"].split(":")
        assert host == f"{bootstrap}.{namespace}.svc" and port in ports


@pytest.mark.parametrize("overlay", KEDA_OVERLAYS)
def test_scaledobjects_watch_their_stage_within_its_partitions(overlay):
    docs = render(overlay)
    deployed = _topics(docs)
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in kind(docs, "ScaledObject")}
    assert set(scaled) == {"facestream-detector", "facestream-embedder"}
    for name, so in scaled.items():
        deployment = named(docs, "Deployment", name)
        stage = stage_of(deployment)
        (trigger,) = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["topic"] == STAGE_INPUT[stage]
        assert meta["consumerGroup"] == group_id(deployment)
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        assert so["spec"]["maxReplicaCount"] <= deployed[meta["topic"]]["spec"]["partitions"]
        # A replica count in the Deployment would fight the autoscaler on every apply.
        assert "replicas" not in deployment["spec"], name


@pytest.mark.parametrize("overlay", KEDA_OVERLAYS)
def test_the_detector_scales_on_its_cpu_too_because_shedding_keeps_its_lag_short(overlay):
    docs = render(overlay)
    so = named(docs, "ScaledObject", "facestream-detector")
    (cpu,) = [t for t in so["spec"]["triggers"] if t["type"] == "cpu"]
    assert cpu["metricType"] == "Utilization" and 50 <= int(cpu["metadata"]["value"]) <= 95
    for c in named(docs, "Deployment", "facestream-detector")["spec"]["template"]["spec"]["containers"]:
        assert "cpu" in c.get("resources", {}).get("requests", {}), f"KEDA's cpu scaler needs {c['name']}'s request"


def test_without_keda_hpas_take_over_within_the_partitions():
    docs = render("no-keda")
    deployed = _topics(docs)
    assert kind(docs, "ScaledObject") == []
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in kind(docs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"facestream-detector", "facestream-embedder"}
    for name, hpa in hpas.items():
        stage = stage_of(named(docs, "Deployment", name))
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["maxReplicas"] <= deployed[STAGE_INPUT[stage]]["spec"]["partitions"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_fixed_replicas_stay_within_the_partitions(overlay):
    docs = render(overlay)
    deployed = _topics(docs)
    for d in facestream_deployments(docs):
        stage = stage_of(d)
        if stage in STAGE_INPUT and "replicas" in d["spec"]:
            assert d["spec"]["replicas"] <= deployed[STAGE_INPUT[stage]]["spec"]["partitions"], stage
