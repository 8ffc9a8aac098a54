"""The stack's other shapes, on real servers started here beside the default stack (scripts/extra_stack.py):
a 3-node KRaft cluster that loses a node under an acks=all producer, and a secured stack (Kafka SASL_SSL
with SCRAM-SHA-512, Redis TLS with ACL users) that refuses whoever lacks the right login.

Two stacks, one after the other: the cluster is class-scoped and torn down before the module-scoped secure
stack starts (a 2-core machine runs one extra stack at a time). Run with -s for the failover's figures.
A server that does not come up fails the test; nothing here skips.
"""
from __future__ import annotations

import socket
import ssl
import time
import uuid

import numpy as np
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from shared import topics
from shared.kafka_admin import create_topics
from tests.conftest import consume_all
from scripts.extra_stack import ExtraStack

pytestmark = pytest.mark.integration

REFUSED = (KafkaTimeoutError, KafkaConnectionError)  # kafka-python 3.0 has no NoBrokersAvailable: bootstrap times out


def wait_for(check, what: str, timeout_s: float, every_s: float = 0.5):
    """Poll until `check()` returns something true (returned); fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    pytest.fail(f"{what}: not within {timeout_s:.0f}s")


def admin_of(stack: ExtraStack, **kw) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, request_timeout_ms=10000, **stack.kafka_kwargs(),
                            **kw)


def partitions_of(stack: ExtraStack, topic: str) -> list[dict]:
    """The topic's partitions as the metadata has them; [] when the node asked is down (a killed node stays
    in the metadata until the controller fences it, and kafka-python then raises instead of asking another)."""
    try:
        admin = admin_of(stack)
    except REFUSED:
        return []
    try:
        return admin.describe_topics([topic])[0]["partitions"]
    except REFUSED:
        return []
    finally:
        admin.close()


def failed_over(partitions: list[dict], victim: int) -> bool:
    return bool(partitions) and all(p["leader_id"] not in (victim, -1) and victim not in p["isr_nodes"]
                                    for p in partitions)


def rejoined(partitions: list[dict], node: int) -> bool:
    return bool(partitions) and all(node in p["isr_nodes"] for p in partitions)


def leader(partitions: list[dict], index: int) -> int | None:
    """The leader's node id, or None while the new topic's metadata has not reached the broker asked."""
    by_index = {p["partition_index"]: p["leader_id"] for p in partitions}
    return by_index.get(index) if by_index.get(index, -1) >= 0 else None


# --- a 3-node cluster ----------------------------------------------------------------------------
@pytest.fixture(scope="class")
def cluster(tmp_path_factory):
    with ExtraStack(tmp_path_factory.mktemp("cluster"), brokers=3) as stack:
        yield stack


class TestCluster:
    def test_three_brokers_in_the_metadata_each_its_own_jvm(self, cluster):
        admin = admin_of(cluster)
        try:
            brokers = admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        assert sorted(b["broker_id"] for b in brokers) == [1, 2, 3]
        assert sorted(b["port"] for b in brokers) == [cluster.kafka_port + 2 * i for i in range(3)]
        pids = cluster.pids()
        assert {k for k in pids if k.startswith("kafka")} == {"kafka/node-1", "kafka/node-2", "kafka/node-3"}
        assert len(set(pids.values())) == 4  # three JVMs and Redis

    def test_topics_have_three_replicas_and_min_insync_two(self, cluster):
        admin = admin_of(cluster)
        try:
            described = {t["name"]: t["partitions"] for t in admin.describe_topics([t.name for t in topics.ALL])}
            configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t.name) for t in topics.ALL])
            broker = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")],
                                            config_filter="all")["broker"]["1"]
        finally:
            admin.close()
        for t in topics.ALL:
            assert len(described[t.name]) == t.partitions, t.name
            assert all(len(p["replica_nodes"]) == 3 and len(p["isr_nodes"]) == 3 for p in described[t.name]), t.name
            assert configs["topic"][t.name]["min.insync.replicas"]["value"] == "2", t.name
        for key, value in {"default.replication.factor": "3", "min.insync.replicas": "2",
                           "offsets.topic.replication.factor": "3", "transaction.state.log.replication.factor": "3",
                           "transaction.state.log.min.isr": "2"}.items():
            assert broker[key]["value"] == value, key

    def test_acks_all_producer_survives_a_killed_broker_which_rejoins_the_isr(self, cluster):
        topic = f"failover-{uuid.uuid4().hex[:8]}"
        create_topics(cluster.kafka_bootstrap, {topic: 3}, replication=3, min_insync=2)
        victim = wait_for(lambda: leader(partitions_of(cluster, topic), 0), "a leader of partition 0", 30)
        sent, errors = produce_through_a_kill(cluster, topic, victim)
        assert not errors, errors[:3]
        values = [r.value.decode() for r in consume_all(cluster.kafka_bootstrap, topic, group_id=f"g-{topic}",
                                                        expect=len(sent), timeout_s=60)]
        assert set(values) == set(sent) and len(values) >= len(sent)
        # the group's commits made __consumer_offsets: an internal topic with 3 replicas too
        assert {len(p["replica_nodes"]) for p in partitions_of(cluster, "__consumer_offsets")} == {3}

        t0 = time.monotonic()
        cluster.start_broker(victim)
        wait_for(lambda: rejoined(partitions_of(cluster, topic), victim),
                 f"node {victim} back in the ISR of every partition", 90)
        print(f"node {victim} restarted and back in every ISR after {time.monotonic() - t0:.1f}s")


def produce_through_a_kill(cluster: ExtraStack, topic: str, victim: int) -> tuple[list[str], list[str]]:
    """Send one record every 50 ms, SIGKILL `victim` after the first 40, and go on until the partitions it led
    have new leaders and 3 s more (at most 600 records, 60 s); every send must be acknowledged by acks=all."""
    producer = KafkaProducer(bootstrap_servers=cluster.kafka_bootstrap, acks="all", request_timeout_ms=10000,
                             delivery_timeout_ms=90000)
    sent, futures, killed_at, failed_over_at = [], [], None, None
    deadline = time.monotonic() + 60
    try:
        for i in range(600):
            if time.monotonic() > deadline or (failed_over_at and time.monotonic() > failed_over_at + 3):
                break
            value = f"m-{i}"
            futures.append(producer.send(topic, key=str(i).encode(), value=value.encode()))
            sent.append(value)
            if i == 40:
                cluster.stop_broker(victim)
                killed_at = time.monotonic()
            if killed_at and not failed_over_at and i % 20 == 0 and failed_over(partitions_of(cluster, topic), victim):
                failed_over_at = time.monotonic()
            time.sleep(0.05)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    assert killed_at and failed_over_at, "the cluster did not move leadership off the killed node within 60 s"
    print(f"\nfailover: {len(sent)} records sent, node {victim} SIGKILLed after 40, leaders and ISRs without it "
          f"{failed_over_at - killed_at:.1f}s after the kill")
    errors = []
    for value, f in zip(sent, futures):
        try:
            f.get(timeout=1)
        except Exception as e:  # collected, so that the assertion shows them
            errors.append(f"{value}: {type(e).__name__}: {e}")
    return sent, errors


# --- a secured stack: Kafka SASL_SSL + SCRAM-SHA-512, Redis TLS + ACL users ----------------------
@pytest.fixture(scope="module")  # one for both classes below; set up after the cluster's class tore it down
def secure(tmp_path_factory):
    with ExtraStack(tmp_path_factory.mktemp("secure"), kafka_security="sasl_ssl", redis_security="acl_tls") as stack:
        yield stack


def refused_within(make_client, limit_s: float = 20) -> Exception:
    t0 = time.monotonic()
    with pytest.raises(REFUSED) as info:
        make_client()
    assert time.monotonic() - t0 < limit_s
    return info.value


class TestSecureKafka:
    def test_client_env_names_the_login_by_file(self, secure):
        env = secure.env
        assert env["FACESTREAM_KAFKA_SECURITY"] == "sasl_ssl"
        assert env["FACESTREAM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512" and env["FACESTREAM_KAFKA_USER"] == "facestream"
        assert env["FACESTREAM_KAFKA_CA_FILE"].endswith("/secrets/ca.pem")
        secrets_dir = secure.run_dir / "secrets"
        assert secrets_dir.stat().st_mode & 0o777 == 0o700
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in secrets_dir.iterdir())

    def test_the_right_login_produces_and_consumes(self, secure):
        topic = f"secure-{uuid.uuid4().hex[:8]}"
        create_topics(secure.kafka_bootstrap, {topic: 1}, **secure.kafka_kwargs())
        producer = KafkaProducer(bootstrap_servers=secure.kafka_bootstrap, **secure.kafka_kwargs())
        try:
            for i in range(5):
                producer.send(topic, f"s-{i}".encode()).get(timeout=30)
        finally:
            producer.close(timeout=10)
        consumer = KafkaConsumer(topic, bootstrap_servers=secure.kafka_bootstrap, auto_offset_reset="earliest",
                                 **secure.kafka_kwargs())
        got: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < 5 and time.monotonic() < deadline:
                for recs in consumer.poll(timeout_ms=500).values():
                    got.extend(r.value.decode() for r in recs)
        finally:
            consumer.close()
        assert got == [f"s-{i}" for i in range(5)]

    def test_a_plaintext_client_is_refused(self, secure):
        refused_within(lambda: KafkaAdminClient(bootstrap_servers=secure.kafka_bootstrap, request_timeout_ms=2000,
                                                bootstrap_timeout_ms=4000))
        listeners = next(line for line in (secure.run_dir / "kafka" / "server.properties").read_text().splitlines()
                         if line.startswith("listeners="))
        assert "PLAINTEXT://" not in listeners
        ctx = ssl.create_default_context(cafile=secure.env["FACESTREAM_KAFKA_CA_FILE"])
        with socket.create_connection(("127.0.0.1", secure.kafka_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # the CA's certificate, for 127.0.0.1
                assert tls.version() in ("TLSv1.2", "TLSv1.3")

    def test_a_wrong_password_is_refused_by_the_broker(self, secure):
        """kafka-python 3.0.12 drops the broker's SaslAuthenticate error that arrives with the connection's close
        (it sees "socket disconnected" and bootstraps until its timeout), so the broker's own log is the proof
        that the login itself was refused."""
        log = secure.kafka_log()
        before = log.read_text().count("invalid credentials with SASL mechanism SCRAM-SHA-512")
        refused_within(lambda: KafkaAdminClient(bootstrap_servers=secure.kafka_bootstrap, request_timeout_ms=2000,
                                                bootstrap_timeout_ms=4000,
                                                **secure.kafka_kwargs(password="not-the-password")))
        wait_for(lambda: log.read_text().count("invalid credentials with SASL mechanism SCRAM-SHA-512") > before,
                 "the broker logging the failed SCRAM login", 10)

    def test_no_password_in_the_output_or_the_logs(self, secure):
        passwords = [f.read_text().strip() for f in (secure.run_dir / "secrets").glob("*.password")]
        assert len(passwords) == 6
        logs = [secure.up_output] + [p.read_text(errors="replace") for p in secure.run_dir.glob("**/*.log")
                                     if "data" not in p.relative_to(secure.run_dir).parts]  # not Kafka's segments
        assert not [p for p in passwords for text in logs if p in text]


class TestSecureRedis:
    def test_tls_only_with_logins(self, secure):
        assert secure.redis_url.startswith("rediss://")
        with pytest.raises(redis.exceptions.AuthenticationError):  # `default` is off: NOAUTH
            redis.Redis.from_url(secure.redis_url, ssl_ca_certs=secure.env["FACESTREAM_REDIS_CA_FILE"],
                                 socket_timeout=5).ping()
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):  # no plain TCP
            redis.Redis(host="127.0.0.1", port=secure.redis_port, socket_timeout=5, socket_connect_timeout=5).ping()
        assert secure.redis_client("client").ping()
        assert secure.role_env("matcher")["FACESTREAM_REDIS_USER"] == "matcher"
        assert secure.role_env("enroll")["FACESTREAM_REDIS_USER"] == "enroll"

    def test_enroll_writes_the_gallery_and_the_matcher_reads_it(self, secure):
        from services.matcher.gallery_store import GalleryStore

        prefix = f"facestream:test-{uuid.uuid4().hex[:8]}"
        writer = GalleryStore(secure.redis_client("enroll"), prefix)
        reader = GalleryStore(secure.redis_client("matcher"), prefix)
        subscription = reader.subscribe()  # the matcher's change channel
        try:
            vector = np.ones(128, np.float32) / np.sqrt(128)
            version = writer.add("Test_Person", {"e1": vector}, "model-x", ["photo.jpg"])
            loaded_version, people, _ = reader.load("model-x")
            assert loaded_version == version and list(people) == ["Test_Person"]
            wait_for(lambda: subscription.get_message(timeout=0.5), "the change notification", 10, every_s=0)
        finally:
            subscription.close()

    def test_the_matcher_writes_only_its_visits(self, secure):
        prefix = f"facestream:test-{uuid.uuid4().hex[:8]}"
        gallery_key = f"{prefix}:emb:Someone"
        secure.redis_client("enroll").hset(gallery_key, "e1", b"\0" * 8)
        matcher = secure.redis_client("matcher")
        assert matcher.hgetall(gallery_key) == {b"e1": b"\0" * 8}
        for refused in (lambda: matcher.hset(gallery_key, "e2", b"x"), lambda: matcher.sadd(f"{prefix}:people", "x"),
                        lambda: matcher.delete(gallery_key), matcher.flushall, lambda: matcher.config_get("*"),
                        lambda: matcher.keys("*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                refused()
        for visits in (f"{prefix}:visits:cam-1", "facestream:visits:cam-1"):
            assert matcher.set(visits, "track-1", ex=60)
            assert matcher.get(visits) == b"track-1" and matcher.expire(visits, 30) and matcher.delete(visits) == 1
        assert matcher.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, f"{prefix}:visits:cam-2", "t") == b"OK"
        with pytest.raises(redis.exceptions.NoPermissionError):  # a script is held to the same key rules
            matcher.eval("return redis.call('HSET', KEYS[1], 'e3', 'x')", 1, gallery_key)
