"""Kafka in KRaft mode: one combined broker+controller node, or three as separate JVMs on loopback.

Node i (1..3) serves clients on FACESTREAM_KAFKA_PORT + 2*(i-1) and its controller on
FACESTREAM_KAFKA_CONTROLLER_PORT + 2*(i-1) (default: the client port + 1), e.g. 19092/19093, 19094/19095,
19096/19097; the three controllers are the static quorum (controller.quorum.voters). With three nodes
every topic, internal ones too, has 3 replicas and min.insync.replicas=2: acks=all survives one node lost.

With FACESTREAM_KAFKA_SECURITY=sasl_ssl there is no plaintext listener: clients and the brokers among
themselves speak SASL_SSL with SCRAM-SHA-512 (the brokers as `admin`), the controllers SSL with client
certificates required (the brokers show the server certificate). StandardAuthorizer admits the super users
only: User:admin, User:facestream and the brokers' certificate; every other principal is refused.
"""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from scripts.stack_mode import KAFKA_LIBS, ROOT, Mode, node_dir
from scripts.stack_proc import START_TIMEOUT_S, fail, launch, log, pid_alive, refuse_taken, rss_mib, wait_until
from scripts.stack_secrets import BROKER_CN, ensure_tls, password, write_private

SCRAM = "SCRAM-SHA-512"
USERS = ("admin", "facestream")  # admin: the brokers and this script; facestream: the services

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def name(mode: Mode, node: int) -> str:
    return "kafka" if mode.brokers == 1 else f"kafka node-{node}"


def files(mode: Mode, node: int) -> tuple[Path, Path, Path]:
    """(pid file, server log, server.properties) of a node."""
    d = node_dir(mode, node)
    return d / "kafka.pid", d / "server.log", d / "server.properties"


def java(main: str, *args: str, log4j: Path, heap: str = "256m") -> list[str]:
    return ["java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{KAFKA_LIBS}/*", main, *args]


# --- configuration -------------------------------------------------------------------------------
def base_properties(mode: Mode, node: int) -> dict[str, str]:
    r, isr = str(mode.replication), str(mode.min_insync)
    voters = ",".join(f"{n}@127.0.0.1:{mode.node_controller_port(n)}" for n in mode.nodes)
    return {
        "process.roles": "broker,controller", "node.id": str(node), "controller.quorum.voters": voters,
        "controller.listener.names": "CONTROLLER", "log.dirs": str(node_dir(mode, node) / "data"),
        "num.partitions": "1", "offsets.topic.replication.factor": r, "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": r, "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": r, "share.coordinator.state.topic.min.isr": isr,
        "default.replication.factor": r, "min.insync.replicas": isr,
        "group.initial.rebalance.delay.ms": "0", "auto.create.topics.enable": "false", "log.retention.hours": "24",
    }


def plaintext_listeners(mode: Mode, node: int) -> dict[str, str]:
    port, controller = mode.client_port(node), mode.node_controller_port(node)
    return {"listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}", "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"}


def secure_listeners(mode: Mode, node: int) -> dict[str, str]:
    """SASL_SSL for clients and replication, SSL with client certificates for the controllers."""
    port, controller = mode.client_port(node), mode.node_controller_port(node)
    tls = ensure_tls()
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" '
            f'password="{password("kafka-admin")}";')
    return {"listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}", "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM, "sasl.mechanism.inter.broker.protocol": SCRAM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM", "ssl.keystore.location": str(tls.kafka_keystore),
            "ssl.key.password": tls.kafka_key_password.read_text().strip(),
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(tls.ca),
            "ssl.endpoint.identification.algorithm": "https", "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:admin;User:facestream;User:CN={BROKER_CN}"}


def write_config(mode: Mode, node: int) -> Path:
    """server.properties and log4j2.properties of a node; private (600): a secure node's holds passwords."""
    d = node_dir(mode, node)
    d.mkdir(parents=True, exist_ok=True)
    _, logfile, props = files(mode, node)
    listeners = secure_listeners if mode.kafka_secure else plaintext_listeners
    config = {**base_properties(mode, node), **listeners(mode, node)}
    write_private(props, "".join(f"{k}={v}\n" for k, v in config.items()))
    (d / "log4j2.properties").write_text(LOG4J2.format(log=logfile))
    return props


def cluster_id() -> str:
    """What `StorageTool random-uuid` prints (a UUID in URL-safe base64), without a JVM start."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def format_storage(mode: Mode, nodes: list[int]) -> None:
    """Format the nodes that have no storage yet, in parallel, with one cluster id; a secure cluster gets
    its SCRAM users here (bootstrap records), since no broker accepts a login before they exist."""
    todo = [n for n in nodes if not (node_dir(mode, n) / "data" / "meta.properties").exists()]
    if not todo:
        return
    scram = [a for u in USERS for a in ("--add-scram", f"{SCRAM}=[name={u},password={password(f'kafka-{u}')}]")]
    cid = cluster_id()
    procs = [(n, subprocess.Popen(java("kafka.tools.StorageTool", "format", "-t", cid, "-c",
                                       str(files(mode, n)[2]), *(scram if mode.kafka_secure else []),
                                       log4j=node_dir(mode, n) / "log4j2.properties"),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)) for n in todo]
    for n, p in procs:
        out, _ = p.communicate(timeout=120)
        if p.returncode:
            sys.exit(f"[stack] formatting the storage of {name(mode, n)} failed:\n{out[-2000:]}")


# --- admin connections ---------------------------------------------------------------------------
def admin_kwargs(mode: Mode) -> dict[str, Any]:
    """KafkaAdminClient keyword arguments of this script's own connections (as `admin` when secure)."""
    if not mode.kafka_secure:
        return {}
    return {"security_protocol": "SASL_SSL", "sasl_mechanism": SCRAM, "sasl_plain_username": "admin",
            "sasl_plain_password": password("kafka-admin"), "ssl_cafile": str(ensure_tls().ca),
            "ssl_check_hostname": True}


def brokers_in_metadata(mode: Mode, bootstrap: str | None = None) -> set[int]:
    """Ids of the brokers the cluster metadata lists as live (a fenced one does not count)."""
    from kafka import KafkaAdminClient  # in .venv; imported late so `down` and `status` need nothing

    admin = KafkaAdminClient(bootstrap_servers=bootstrap or mode.bootstrap, request_timeout_ms=3000,
                             bootstrap_timeout_ms=3000, **admin_kwargs(mode))
    try:
        return {b["broker_id"] for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced")}
    finally:
        admin.close()


def create_topics(mode: Mode) -> None:
    """The facestream topics, with the mode's replication and min.insync.replicas; tried again for a few
    seconds, since a node that just registered may not take replicas yet."""
    sys.path.insert(0, str(ROOT))
    from shared.kafka_admin import create_topics as create
    from shared.topics import ALL

    retention = {t.name: t.retention_ms for t in ALL}
    hours = os.environ.get("FACESTREAM_DEAD_LETTER_RETENTION_H")
    if hours:  # dead letters hold pixels: how long they stay is the operator's call
        retention["dead-letter"] = int(float(hours) * 3600 * 1000)
    min_insync = mode.min_insync if mode.brokers > 1 else None
    for attempt in range(10):
        try:
            create(mode.bootstrap, {t.name: t.partitions for t in ALL}, replication=mode.replication,
                   retention_ms=retention, min_insync=min_insync, **admin_kwargs(mode))
            break
        except Exception as e:
            if attempt == 9:
                raise SystemExit(f"[stack] creating the topics failed: {type(e).__name__}: {e}")
            time.sleep(1.0)
    log("topics: " + ", ".join(f"{t.name}({t.partitions})" for t in ALL)
        + (f", replication {mode.replication}, min.insync.replicas {mode.min_insync}" if mode.brokers > 1 else ""))


# --- nodes ---------------------------------------------------------------------------------------
def launch_node(mode: Mode, node: int) -> int:
    pidfile, _, props = files(mode, node)
    d = node_dir(mode, node)
    return launch(java("kafka.Kafka", str(props), log4j=d / "log4j2.properties", heap=mode.heap), d, pidfile)


def report_rss(mode: Mode, nodes: list[int]) -> None:
    for n in nodes:
        pid = pid_alive(files(mode, n)[0])
        rss = rss_mib(pid) if pid else None
        log(f"{name(mode, n)}: pid {pid}, 127.0.0.1:{mode.client_port(n)}, RSS "
            + (f"{rss:.0f} MiB" if rss is not None else "unknown"))


def kafka_up(mode: Mode) -> None:
    """Start the nodes that are not running, wait until all are in the metadata, create the topics; the
    seconds printed run from the launch of the JVMs to the topics created."""
    if not (KAFKA_LIBS / ".complete").exists():
        sys.exit("[stack] the Kafka jars are missing: run `make setup` first")
    todo = []
    for n in mode.nodes:
        if pid := pid_alive(files(mode, n)[0]):
            log(f"{name(mode, n)} already running (pid {pid}) on 127.0.0.1:{mode.client_port(n)}")
        else:
            todo.append(n)
    launched_at = launch_nodes(mode, todo) if todo else None
    wait_for_brokers(mode, set(mode.nodes), todo)
    create_topics(mode)
    if launched_at is not None:
        log(f"kafka up on {mode.bootstrap}: {mode.brokers} broker(s) in the metadata and the topics created "
            f"{time.monotonic() - launched_at:.1f}s after launch")
        report_rss(mode, todo)


def launch_nodes(mode: Mode, nodes: list[int]) -> float:
    """Configure, format (where new) and launch the nodes; returns when they were launched (monotonic)."""
    refuse_taken([p for n in nodes for p in (mode.client_port(n), mode.node_controller_port(n))],
                 "set FACESTREAM_KAFKA_PORT (and _CONTROLLER_PORT) to free ports")
    t0 = time.monotonic()
    for n in nodes:
        write_config(mode, n)
    format_storage(mode, nodes)
    launched_at = time.monotonic()
    for n in nodes:
        launch_node(mode, n)
    log(f"kafka: {len(nodes)} node(s) launched (storage format and config {launched_at - t0:.1f}s)")
    return launched_at


def serving(mode: Mode, node: int) -> bool:
    """The node answers metadata on its own port and is listed unfenced. Asked of the node itself: a node
    killed seconds ago is still listed until its session times out (broker.session.timeout.ms, 9 s)."""
    return node in brokers_in_metadata(mode, f"127.0.0.1:{mode.client_port(node)}")


def wait_for_brokers(mode: Mode, wanted: set[int], started: list[int]) -> None:
    """Until every node of `wanted` is in the metadata and each node just `started` serves on its port."""
    wait_until(lambda: wanted <= brokers_in_metadata(mode) and all(serving(mode, n) for n in started),
               f"kafka ({len(wanted)} broker(s) in the metadata)", [files(mode, n)[:2] for n in started or wanted],
               timeout_s=START_TIMEOUT_S)


def start_broker(mode: Mode, node: int) -> None:
    """Start a stopped node again with its config and data, and wait until it is back in the metadata."""
    check_node(mode, node)
    pidfile, logfile, props = files(mode, node)
    if pid_alive(pidfile):
        log(f"{name(mode, node)} already running (pid {pid_alive(pidfile)})")
        return
    if not props.exists():
        fail(f"{name(mode, node)} was never started here (no {props})", logfile)
    refuse_taken([mode.client_port(node), mode.node_controller_port(node)], "another process holds the node's ports")
    t0 = time.monotonic()
    launch_node(mode, node)
    wait_for_brokers(mode, {node}, [node])
    log(f"{name(mode, node)} back in the cluster metadata after {time.monotonic() - t0:.1f}s")
    report_rss(mode, [node])


def check_node(mode: Mode, node: int) -> None:
    if node not in mode.nodes:
        sys.exit(f"[stack] no node {node}: this stack has nodes {list(mode.nodes)}")
