"""Start and stop the single-node Kafka broker (KRaft) and the Redis server facestream runs on.

    python scripts/stack.py up|down|status

Ports, data and logs are configurable through the environment (see `Ports`); everything lives under
.run/stack. `up` is idempotent (a live PID file means "already running"), waits until the broker
answers a metadata request and Redis a PING, creates the topics with their partition counts, and
fails with the tail of the log when a server does not come up. `down` stops only the PIDs `up` wrote.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = Path(os.environ.get("FACESTREAM_RUN_DIR", ROOT / ".run" / "stack"))
KAFKA_LIBS = ROOT / ".run" / "kafka-libs"
KAFKA_PORT = int(os.environ.get("FACESTREAM_KAFKA_PORT", "9092"))
CONTROLLER_PORT = int(os.environ.get("FACESTREAM_KAFKA_CONTROLLER_PORT", str(KAFKA_PORT + 1)))
REDIS_PORT = int(os.environ.get("FACESTREAM_REDIS_PORT", "6379"))
KAFKA_HEAP = os.environ.get("FACESTREAM_KAFKA_HEAP", "512m")
START_TIMEOUT_S = float(os.environ.get("FACESTREAM_START_TIMEOUT_S", "90"))

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
"""

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


def log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def fail(what: str, logfile: Path) -> None:
    sys.exit(f"[stack] {what}\n--- last lines of {logfile} ---\n{tail(logfile)}")


def wait_until(check, what: str, logfile: Path, pidfile: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if pid_alive(pidfile) is None:
            fail(f"{what}: the process exited during start", logfile)
        try:
            if check():
                return
        except Exception as e:  # not answering yet
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.3)
    fail(f"{what}: no answer within {START_TIMEOUT_S:.0f}s (last error: {last or 'none'})", logfile)


# --- Redis ---------------------------------------------------------------------------------------
def redis_ping() -> bool:
    with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def redis_up() -> None:
    d = RUN / "redis"
    d.mkdir(parents=True, exist_ok=True)
    pidfile, logfile = d / "redis.pid", d / "redis.log"
    if pid_alive(pidfile):
        log(f"redis already running (pid {pid_alive(pidfile)}) on 127.0.0.1:{REDIS_PORT}")
        return
    if port_open(REDIS_PORT):
        sys.exit(f"[stack] port {REDIS_PORT} is taken by a process this script did not start; "
                 f"set FACESTREAM_REDIS_PORT to another port")
    # not --daemonize: we start it in its own session and keep its PID, as for Kafka
    with open(d / "stdout.log", "ab") as out:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--daemonize", "no",
             "--logfile", str(logfile), "--dir", str(d),
             # durability for the gallery: append-only file, fsync every second
             "--appendonly", "yes", "--save", ""],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(str(proc.pid))
    wait_until(redis_ping, "redis", logfile, pidfile)
    log(f"redis up on 127.0.0.1:{REDIS_PORT} (pid {pid_alive(pidfile)})")


# --- Kafka ---------------------------------------------------------------------------------------
def java(main: str, *args: str, log4j: Path, heap: str = "256m") -> list[str]:
    return ["java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{KAFKA_LIBS}/*", main, *args]


def kafka_metadata_ok() -> bool:
    from kafka import KafkaAdminClient  # in .venv; imported late so `down` needs nothing

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}", request_timeout_ms=3000)
    try:
        return len(admin.describe_cluster()["brokers"]) == 1
    finally:
        admin.close()


def create_topics() -> None:
    sys.path.insert(0, str(ROOT))
    from shared.kafka_admin import create_topics as create
    from shared.topics import ALL

    retention = {t.name: t.retention_ms for t in ALL}
    hours = os.environ.get("FACESTREAM_DEAD_LETTER_RETENTION_H")
    if hours:  # dead letters hold pixels: how long they stay is the operator's call
        retention["dead-letter"] = int(float(hours) * 3600 * 1000)
    create(f"127.0.0.1:{KAFKA_PORT}", {t.name: t.partitions for t in ALL}, retention_ms=retention)
    log("topics: " + ", ".join(f"{t.name}({t.partitions})" for t in ALL))


def kafka_up() -> None:
    if not (KAFKA_LIBS / ".complete").exists():
        sys.exit("[stack] the Kafka jars are missing: run `make setup` first")
    d = RUN / "kafka"
    data = d / "data"
    d.mkdir(parents=True, exist_ok=True)
    pidfile, logfile = d / "kafka.pid", d / "server.log"
    if pid_alive(pidfile):
        log(f"kafka already running (pid {pid_alive(pidfile)}) on 127.0.0.1:{KAFKA_PORT}")
        create_topics()
        return
    for p in (KAFKA_PORT, CONTROLLER_PORT):
        if port_open(p):
            sys.exit(f"[stack] port {p} is taken by a process this script did not start; "
                     f"set FACESTREAM_KAFKA_PORT (and _CONTROLLER_PORT) to free ports")
    props, log4j = d / "server.properties", d / "log4j2.properties"
    props.write_text(SERVER_PROPERTIES.format(port=KAFKA_PORT, controller=CONTROLLER_PORT, data=data))
    log4j.write_text(LOG4J2.format(log=logfile))
    if not (data / "meta.properties").exists():
        cluster_id = subprocess.run(java("kafka.tools.StorageTool", "random-uuid", log4j=log4j),
                                    check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                            log4j=log4j), check=True, capture_output=True, text=True)
    with open(d / "stdout.log", "ab") as out:
        proc = subprocess.Popen(java("kafka.Kafka", str(props), log4j=log4j, heap=KAFKA_HEAP),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(str(proc.pid))
    wait_until(kafka_metadata_ok, "kafka", logfile, pidfile)
    log(f"kafka up on 127.0.0.1:{KAFKA_PORT} (pid {proc.pid})")
    create_topics()


def stop(name: str, pidfile: Path) -> None:
    pid = pid_alive(pidfile)
    if pid is None:
        log(f"{name} not running")
        pidfile.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pid_alive(pidfile):
        time.sleep(0.2)
    if pid_alive(pidfile):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    log(f"{name} stopped (pid {pid})")


def main(argv: list[str]) -> None:
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd == "up":
        redis_up()
        kafka_up()
        log(f"FACESTREAM_KAFKA_BOOTSTRAP=127.0.0.1:{KAFKA_PORT} FACESTREAM_REDIS_URL=redis://127.0.0.1:{REDIS_PORT}/0")
    elif cmd == "down":
        stop("kafka", RUN / "kafka" / "kafka.pid")
        stop("redis", RUN / "redis" / "redis.pid")
    elif cmd == "status":
        for name, pf in (("kafka", RUN / "kafka" / "kafka.pid"), ("redis", RUN / "redis" / "redis.pid")):
            pid = pid_alive(pf)
            log(f"{name}: {'running, pid ' + str(pid) if pid else 'stopped'}")
    else:
        sys.exit(f"usage: {argv[0]} up|down|status")


if __name__ == "__main__":
    main(sys.argv)
