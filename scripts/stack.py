"""Start and stop the Kafka (KRaft) and Redis servers facestream runs on, plainly or secured.

    python scripts/stack.py up | down | status | stop-broker I | start-broker I

`up` is idempotent (a live PID file means "already running"), waits until every broker is in the cluster
metadata and Redis answers a PING, creates the topics, writes the client settings, and fails with the
tail of the log when a server does not come up. `down` stops only the PIDs `up` wrote (every node, whatever
the mode). `stop-broker I` SIGKILLs node I's JVM (a crash, for failover tests); `start-broker I` starts it
again with the same config and data and waits until it is back in the metadata.

The environment (all optional; `up` records what it used in $RUN/stack.json, and later commands read it):
    FACESTREAM_RUN_DIR                 everything lives here (default .run/stack)
    FACESTREAM_KAFKA_BROKERS           1 (default) or 3 combined broker+controller nodes
    FACESTREAM_KAFKA_PORT              node 1's client port (9092); node i's is this + 2*(i-1)
    FACESTREAM_KAFKA_CONTROLLER_PORT   node 1's controller port (client port + 1); node i's is this + 2*(i-1)
    FACESTREAM_KAFKA_HEAP              JVM heap per node (512m for one node, 384m each for three)
    FACESTREAM_KAFKA_SECURITY          plaintext (default) or sasl_ssl (SCRAM-SHA-512 over TLS; no plaintext)
    FACESTREAM_REDIS_PORT              6379
    FACESTREAM_REDIS_SECURITY          none (default) or acl_tls (TLS only, ACL users, `default` off)
    FACESTREAM_START_TIMEOUT_S         how long a server may take to come up (90)
    FACESTREAM_DEAD_LETTER_RETENTION_H retention of the dead-letter topic

Files: $RUN/kafka/ (one node: data, kafka.pid, server.log) or $RUN/kafka/node-<i>/ (three); $RUN/redis/;
$RUN/secrets/ (the CA, certificates, passwords: scripts/stack_secrets.py); $RUN/client.env, matcher.env and
enroll.env, the FACESTREAM_* settings of a client (scripts/stack_env.py). The parts: stack_mode (modes and
layout), stack_kafka, stack_redis, stack_secrets, stack_env, stack_proc (processes).

Redis ACL users (acl_tls). Key patterns are globs in which `*` also matches ':', so `facestream:*` covers the
default gallery prefix `facestream:gallery` and the tests' `facestream:test-<run>`:
    default   off: an unauthenticated client can run nothing
    admin     ~* &* +@all (this script's PING; client.env)
    enroll    the gallery writer: read/write ~facestream:* (Redis has no "all but" pattern, so visits keys
              too), publish to &facestream:*, +@read +@write +@transaction +@scripting +@connection +publish,
              then -@dangerous (no KEYS, FLUSHALL, FLUSHDB, CONFIG, DEBUG, ...)
    matcher   reads %R~facestream:*, reads and writes its visit state ~facestream:visits:* and
              ~facestream:*:visits:* (e.g. facestream:test-<run>:visits:<camera>), subscribes to
              &facestream:*; +@read +@connection +@transaction -@dangerous +subscribe +psubscribe +unsubscribe
              +punsubscribe +ping +eval +evalsha +set +del +expire +pexpire +scan (@transaction: GalleryStore.load
              reads in MULTI/EXEC). So no HSET or SADD at all, no DEL on gallery keys (DEL needs write access to
              the key, and so does EVAL of a script declaring one), no FLUSHALL, CONFIG or KEYS.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import stack_kafka, stack_redis  # noqa: E402
from scripts.stack_mode import REDIS_DIR, RUN, SECRETS, Mode, current, kafka_pidfiles, recorded, record, resolve  # noqa: E402
from scripts.stack_proc import kill_now, log, pid_alive, rss_mib, stop_all  # noqa: E402

REDIS_PID = REDIS_DIR / "redis.pid"


def running_pids() -> list[int]:
    return [pid for pf in [*kafka_pidfiles(), REDIS_PID] if (pid := pid_alive(pf))]


def settle(mode: Mode) -> Mode:
    """The mode `up` may start: one run folder holds one stack, so a running one is not reshaped (only its
    heap is kept as it is), and a broker's data is not reused by another broker count or security (its
    storage was formatted for them)."""
    before = recorded()
    if running_pids():
        if before is None:  # started by an older stack.py: the single plaintext node
            same = (mode.brokers, mode.kafka_security, mode.redis_security) == (1, "plaintext", "none")
        else:
            mode = replace(mode, heap=before.heap)
            same = mode == before
        if not same:
            sys.exit(f"[stack] {RUN} runs another stack ({(before or Mode()).describe()}); "
                     f"`scripts/stack.py down` it first or use another FACESTREAM_RUN_DIR")
    old = before or Mode()
    has_data = any((RUN / "kafka").glob("**/meta.properties"))
    if has_data and (old.brokers, old.kafka_security) != (mode.brokers, mode.kafka_security):
        # A test stack's broker data (frames of minutes, events) is not worth an error: it is replaced, and
        # the topics are made again. The gallery lives in Redis, which keeps its data.
        log(f"replacing the stopped stack's Kafka data ({old.brokers} broker(s), {old.kafka_security}) with a "
            f"new {mode.brokers}-broker {mode.kafka_security} one; Redis keeps its data")
        shutil.rmtree(RUN / "kafka")
    return mode


def up() -> None:
    from scripts.stack_env import write_env_files

    # a running stack is the one asked for unless a variable says otherwise; a stopped one starts as the
    # variables (or the defaults) say: `make demo` after a cluster experiment gets its one broker again
    mode = settle(resolve(use_record=bool(running_pids())))
    record(mode)
    if mode != Mode():
        log(f"mode: {mode.describe()}")
    stack_redis.redis_up(mode)
    stack_kafka.kafka_up(mode)
    written = write_env_files(mode)
    log(f"FACESTREAM_KAFKA_BOOTSTRAP={mode.bootstrap} FACESTREAM_REDIS_URL={stack_redis.url(mode)}")
    log("client settings: " + ", ".join(str(p) for p in written)
        + (f"; secrets in {SECRETS}" if mode.kafka_secure or mode.redis_secure else ""))


def node_name(pidfile: Path) -> str:
    return "kafka" if pidfile.parent.name == "kafka" else f"kafka {pidfile.parent.name}"


def down() -> None:
    stop_all([(node_name(pf), pf) for pf in kafka_pidfiles()] or [("kafka", RUN / "kafka" / "kafka.pid")])
    stop_all([("redis", REDIS_PID)])


def describe(name: str, pid: int | None, where: str) -> str:
    if not pid:
        return f"{name}: stopped"
    rss = rss_mib(pid)
    return f"{name}: running, pid {pid} on {where}" + (f", RSS {rss:.0f} MiB" if rss else "")


def status() -> None:
    mode = current()
    log(f"mode: {mode.describe()} ({RUN})")
    for n in mode.nodes:
        pidfile = stack_kafka.files(mode, n)[0]
        log(describe(stack_kafka.name(mode, n), pid_alive(pidfile), f"127.0.0.1:{mode.client_port(n)}"))
    log(describe("redis", pid_alive(REDIS_PID), f"127.0.0.1:{mode.redis_port}"))


def node_arg(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[2].isdigit():
        sys.exit(f"usage: {argv[0]} {argv[1]} I (a node id, 1..brokers)")
    return int(argv[2])


def stop_broker(node: int) -> None:
    mode = current()
    stack_kafka.check_node(mode, node)
    kill_now(stack_kafka.name(mode, node), stack_kafka.files(mode, node)[0])


def main(argv: list[str]) -> None:
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd == "up":
        up()
    elif cmd == "down":
        down()
    elif cmd == "status":
        status()
    elif cmd == "stop-broker":
        stop_broker(node_arg(argv))
    elif cmd == "start-broker":
        stack_kafka.start_broker(current(), node_arg(argv))
    else:
        sys.exit(f"usage: {argv[0]} up|down|status|stop-broker I|start-broker I")


if __name__ == "__main__":
    main(sys.argv)
