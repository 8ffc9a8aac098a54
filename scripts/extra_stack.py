"""A Kafka + Redis stack of its own, for a test or a benchmark, beside the default one (9092/9093, 6379).

    with ExtraStack(tmp_path, brokers=3) as stack:                      # a 3-node KRaft cluster
        KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", **stack.kafka_kwargs())
        stack.stop_broker(2); stack.start_broker(2)
    with ExtraStack(tmp_path, kafka_security="sasl_ssl", redis_security="acl_tls") as stack:
        subprocess.run([...], env={**os.environ, **stack.role_env("matcher")})

It runs `scripts/stack.py up` with a run folder under `run_dir` and free ports of its own, and `down` on
exit, test failure included (then SIGKILLs by PID whatever `down` left). `.env` holds the FACESTREAM_*
settings of $RUN/client.env, what a service started as a subprocess needs; `.role_env(role)` those of
matcher.env or enroll.env (Redis as that ACL user).
"""
from __future__ import annotations

import os
import random
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "scripts" / "stack.py"
RESERVED = {9092, 9093, 6379}  # the default stack's ports
PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range (32768+), so no outgoing connection takes them


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(brokers: int, tries: int = 50) -> tuple[int, int]:
    """(first Kafka port, Redis port): 2*brokers consecutive free ports (client, controller per node) and one
    more, none of them the default stack's."""
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(PORT_RANGE[0], PORT_RANGE[1] - 2 * brokers - 1)
        ports = list(range(base, base + 2 * brokers + 1))
        if not RESERVED & set(ports) and all(port_free(p) for p in ports):
            return base, ports[-1]
    raise RuntimeError(f"no {2 * brokers + 1} consecutive free ports found in {tries} tries")


def alive(pid: int) -> bool:
    """Running, and not a zombie (a SIGKILLed server waiting for init to reap it holds no port)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return out


class ExtraStack:
    def __init__(self, run_dir: Path, *, brokers: int = 1, kafka_security: str = "plaintext",
                 redis_security: str = "none", heap: str | None = None, up_timeout_s: float = 300):
        self.run_dir = Path(run_dir) / "stack"
        self.brokers, self.kafka_security, self.redis_security = brokers, kafka_security, redis_security
        self.heap, self.up_timeout_s = heap, up_timeout_s
        self.kafka_port, self.redis_port = free_ports(brokers)
        self.up_output = ""
        self.env: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------------------
    def stack_env(self) -> dict[str, str]:
        """The environment of `scripts/stack.py`: this process's, less any FACESTREAM_* setting that would
        point it at another stack, plus this one's mode and ports."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACESTREAM_") or k == "FACESTREAM_DATA"}
        env.update({"FACESTREAM_RUN_DIR": str(self.run_dir), "FACESTREAM_KAFKA_BROKERS": str(self.brokers),
                    "FACESTREAM_KAFKA_SECURITY": self.kafka_security, "FACESTREAM_REDIS_SECURITY": self.redis_security,
                    "FACESTREAM_KAFKA_PORT": str(self.kafka_port), "FACESTREAM_REDIS_PORT": str(self.redis_port),
                    "FACESTREAM_START_TIMEOUT_S": str(int(self.up_timeout_s * 0.6))})
        if self.heap:
            env["FACESTREAM_KAFKA_HEAP"] = self.heap
        return env

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """`scripts/stack.py ARGS` on this stack; raises with its output when it fails."""
        res = subprocess.run([sys.executable, str(STACK), *args], cwd=ROOT, env=self.stack_env(), text=True,
                             capture_output=True, timeout=timeout_s)
        if res.returncode:
            raise RuntimeError(f"stack.py {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def __enter__(self) -> "ExtraStack":
        try:
            self.up_output = self.run("up", timeout_s=self.up_timeout_s).stdout
            self.env = read_env_file(self.run_dir / "client.env")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """`down`, then SIGKILL by PID file whatever it left (e.g. when `up` failed half way)."""
        try:
            self.run("down", timeout_s=120)
        except Exception:
            pass
        for pid in self.pids().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- what tests use --------------------------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return self.env["FACESTREAM_KAFKA_BOOTSTRAP"]

    @property
    def redis_url(self) -> str:
        return self.env["FACESTREAM_REDIS_URL"]

    def role_env(self, role: str) -> dict[str, str]:
        """The settings of $RUN/<role>.env: `matcher`, `enroll` or `client` (Redis as admin)."""
        return read_env_file(self.run_dir / f"{role}.env")

    def secret(self, name: str) -> str:
        """A password of $RUN/secrets, e.g. `kafka-facestream` or `redis-matcher`."""
        return (self.run_dir / "secrets" / f"{name}.password").read_text().strip()

    def kafka_kwargs(self, user: str = "facestream", password: str | None = None) -> dict[str, Any]:
        """kafka-python keyword arguments of a client of this stack (none when plaintext)."""
        if self.env.get("FACESTREAM_KAFKA_SECURITY", "plaintext") == "plaintext":
            return {}
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": self.env["FACESTREAM_KAFKA_SASL_MECHANISM"],
                "sasl_plain_username": user,
                "sasl_plain_password": self.secret(f"kafka-{user}") if password is None else password,
                "ssl_cafile": self.env["FACESTREAM_KAFKA_CA_FILE"], "ssl_check_hostname": True}

    def redis_client(self, role: str = "client", **kw: Any):
        """redis-py client of a role's settings (TLS against the stack's CA, logged in as its user)."""
        import redis

        env = self.role_env(role)
        if "FACESTREAM_REDIS_USER" in env:
            kw = {"username": env["FACESTREAM_REDIS_USER"], "ssl_ca_certs": env["FACESTREAM_REDIS_CA_FILE"],
                  "password": Path(env["FACESTREAM_REDIS_PASSWORD_FILE"]).read_text().strip(), **kw}
        return redis.Redis.from_url(env["FACESTREAM_REDIS_URL"], socket_timeout=5, **kw)

    def kafka_log(self, node: int = 1) -> Path:
        return self.run_dir / "kafka" / ("" if self.brokers == 1 else f"node-{node}") / "server.log"

    def stop_broker(self, node: int) -> None:
        """SIGKILL node `node`'s JVM (`stack.py stop-broker`)."""
        self.run("stop-broker", str(node))

    def start_broker(self, node: int) -> str:
        """Start it again and wait until it is back in the cluster metadata; returns what stack.py said."""
        return self.run("start-broker", str(node), timeout_s=self.up_timeout_s).stdout

    def pids(self) -> dict[str, int]:
        """Live server processes by their folder under the run folder: "kafka" or "kafka/node-<i>", "redis"."""
        out = {}
        for pidfile in sorted(self.run_dir.glob("**/*.pid")):
            try:
                pid = int(pidfile.read_text().strip())
            except (ValueError, FileNotFoundError):
                continue
            if alive(pid):
                out[str(pidfile.parent.relative_to(self.run_dir))] = pid
        return out
