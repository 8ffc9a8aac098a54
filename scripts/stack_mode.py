"""What stack the run folder holds: brokers, security, ports, heap; and where each part keeps its files.

The mode `up` used is recorded in $RUN/stack.json, so that `status`, `down`, `stop-broker` and
`start-broker` need no environment, and a second `up` without one finds the same stack. An environment
variable that is set wins over the record; one that is not falls back to it, then to the default.
A folder with no record is the single plaintext node of the default stack (what older `up`s started).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = Path(os.environ.get("FACESTREAM_RUN_DIR", ROOT / ".run" / "stack")).resolve()
KAFKA_LIBS = ROOT / ".run" / "kafka-libs"
RECORD = RUN / "stack.json"
SECRETS = RUN / "secrets"

KAFKA_SECURITIES = ("plaintext", "sasl_ssl")
REDIS_SECURITIES = ("none", "acl_tls")
# 2 cores and 24 GiB: three 384 MiB heaps (330-440 MiB of RSS each after start, measured) leave room for the
# default stack, the services and the tests beside them; one node keeps the 512 MiB it always had.
HEAP_ONE, HEAP_CLUSTER = "512m", "384m"

ENV = {  # field -> environment variable
    "brokers": "FACESTREAM_KAFKA_BROKERS",
    "kafka_security": "FACESTREAM_KAFKA_SECURITY",
    "redis_security": "FACESTREAM_REDIS_SECURITY",
    "kafka_port": "FACESTREAM_KAFKA_PORT",
    "controller_port": "FACESTREAM_KAFKA_CONTROLLER_PORT",
    "redis_port": "FACESTREAM_REDIS_PORT",
    "heap": "FACESTREAM_KAFKA_HEAP",
}


@dataclass(frozen=True)
class Mode:
    brokers: int = 1
    kafka_security: str = "plaintext"
    redis_security: str = "none"
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    heap: str = HEAP_ONE

    @property
    def nodes(self) -> range:
        """Node ids, 1..brokers: the broker ids Kafka reports, and the I of `stop-broker I`."""
        return range(1, self.brokers + 1)

    def client_port(self, node: int) -> int:
        return self.kafka_port + 2 * (node - 1)

    def node_controller_port(self, node: int) -> int:
        return self.controller_port + 2 * (node - 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.client_port(n)}" for n in self.nodes)

    @property
    def replication(self) -> int:
        """Replicas of every topic, internal ones included; min.insync.replicas is one less (2 of 3)."""
        return min(self.brokers, 3)

    @property
    def min_insync(self) -> int:
        return max(1, self.replication - 1)

    @property
    def kafka_secure(self) -> bool:
        return self.kafka_security == "sasl_ssl"

    @property
    def redis_secure(self) -> bool:
        return self.redis_security == "acl_tls"

    def all_ports(self) -> list[int]:
        return [p for n in self.nodes for p in (self.client_port(n), self.node_controller_port(n))] + [self.redis_port]

    def describe(self) -> str:
        return (f"{self.brokers} broker(s), kafka {self.kafka_security}, redis {self.redis_security}, "
                f"heap {self.heap}")


def node_dir(mode: Mode, node: int) -> Path:
    """One node keeps the layout the default stack always had ($RUN/kafka/kafka.pid, the tests read it);
    a cluster gives each node $RUN/kafka/node-<i>/ with its own data, pid file and log."""
    return RUN / "kafka" if mode.brokers == 1 else RUN / "kafka" / f"node-{node}"


def kafka_pidfiles() -> list[Path]:
    """Every node pid file under $RUN, whatever mode wrote it: what `down` stops."""
    return [p for p in [RUN / "kafka" / "kafka.pid", *sorted((RUN / "kafka").glob("node-*/kafka.pid"))] if p.exists()]


REDIS_DIR = RUN / "redis"


def recorded() -> Mode | None:
    try:
        return Mode(**json.loads(RECORD.read_text()))
    except FileNotFoundError:
        return None


def record(mode: Mode) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(asdict(mode), indent=1) + "\n")


def resolve(env: dict[str, str] | None = None, use_record: bool = True) -> Mode:
    """The mode asked for: set variables, else the record (`use_record`), else the defaults; checked."""
    env = os.environ if env is None else env
    rec = recorded() if use_record else None
    base = rec or Mode()
    values = {f.name: getattr(base, f.name) for f in fields(Mode)}
    for name, var in ENV.items():
        if env.get(var, "").strip():
            values[name] = env[var].strip().lower() if name.endswith("security") else env[var].strip()
    values["brokers"] = int(values["brokers"])
    for port in ("kafka_port", "controller_port", "redis_port"):
        values[port] = int(values[port])
    if env.get(ENV["kafka_port"], "").strip() and not env.get(ENV["controller_port"], "").strip():
        values["controller_port"] = values["kafka_port"] + 1  # the pair moves together
    if not env.get(ENV["heap"], "").strip() and (rec is None or values["brokers"] != base.brokers):
        values["heap"] = HEAP_CLUSTER if values["brokers"] > 1 else HEAP_ONE
    return check(Mode(**values))


def check(mode: Mode) -> Mode:
    if mode.brokers not in (1, 3):
        raise SystemExit(f"[stack] FACESTREAM_KAFKA_BROKERS must be 1 or 3, not {mode.brokers}")
    if mode.kafka_security not in KAFKA_SECURITIES:
        raise SystemExit(f"[stack] FACESTREAM_KAFKA_SECURITY must be one of {KAFKA_SECURITIES}")
    if mode.redis_security not in REDIS_SECURITIES:
        raise SystemExit(f"[stack] FACESTREAM_REDIS_SECURITY must be one of {REDIS_SECURITIES}")
    ports = mode.all_ports()
    if len(set(ports)) != len(ports):
        raise SystemExit(f"[stack] the ports overlap: {ports} (node i listens on FACESTREAM_KAFKA_PORT + 2*(i-1) "
                         f"and FACESTREAM_KAFKA_CONTROLLER_PORT + 2*(i-1))")
    return mode


def current() -> Mode:
    """The mode of what runs now (the record; with none, the default stack's layout from the environment)."""
    return recorded() or resolve()
