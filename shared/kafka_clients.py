"""How every facestream process reaches Kafka: the bootstrap servers, TLS and SASL, in one place.

    access = KafkaAccess.of(cfg)             # cfg: a BaseConfig (kafka_bootstrap, kafka_security, ...)
    producer = make_producer(access, "facestream-ingest-host-1")
    KafkaConsumer("identity-events", **access.kwargs())

`kafka_security` is `plaintext` (a test stack on loopback), `ssl` (TLS: the broker's certificate is
verified against `kafka_ca_file`, or the system's CAs) or `sasl_ssl` (TLS plus a SCRAM login with
`kafka_user` and `kafka_password`; the password usually comes from FACESTREAM_KAFKA_PASSWORD_FILE, a
mounted Secret). Producers are idempotent with acks=all: a broker that fails over mid-send neither loses
nor duplicates a record, and with replication 3 and min.insync.replicas=2 a record acknowledged is on two
brokers at least.

Every factory takes a `KafkaAccess` or, for the tests' and tools' brevity, a bare bootstrap string
(plaintext).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from shared.config import ConfigError

SECURITY = ("plaintext", "ssl", "sasl_ssl")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
# the client settings that carry the security, as kafka-python names them
SECURITY_KEYS = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                 "ssl_cafile", "ssl_check_hostname")


DELIVERY_TIMEOUT_S = 45  # how long a record may take to be acknowledged, retries included


class KafkaAccessError(ConfigError):
    """Security settings that cannot work together (sasl_ssl without a password, a CA file that is not there)."""


@dataclass(frozen=True)
class KafkaAccess:
    bootstrap: str
    security: str = "plaintext"
    mechanism: str = "SCRAM-SHA-512"
    user: str = ""
    password: str = field(default="", repr=False)  # never in a repr, a log line or a traceback's locals
    ca_file: str = ""
    check_hostname: bool = True

    @classmethod
    def of(cls, cfg: Any) -> "KafkaAccess":
        """From a command's settings (shared.config.BaseConfig's kafka_* fields), checked."""
        access = cls(cfg.kafka_bootstrap, getattr(cfg, "kafka_security", "plaintext"),
                     getattr(cfg, "kafka_sasl_mechanism", "SCRAM-SHA-512"), getattr(cfg, "kafka_user", ""),
                     getattr(cfg, "kafka_password", ""), getattr(cfg, "kafka_ca_file", ""),
                     getattr(cfg, "kafka_check_hostname", True))
        access.check()
        return access

    def check(self) -> None:
        if self.security not in SECURITY:
            raise KafkaAccessError(f"kafka_security = {self.security!r}: must be one of {', '.join(SECURITY)}")
        if self.security == "sasl_ssl" and not (self.user and self.password):
            raise KafkaAccessError("kafka_security = sasl_ssl needs kafka_user and kafka_password "
                                   "(FACESTREAM_KAFKA_USER, FACESTREAM_KAFKA_PASSWORD_FILE)")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise KafkaAccessError(f"kafka_ca_file = {self.ca_file}: no such file")

    def security_kwargs(self) -> dict[str, Any]:
        """kafka-python's settings for this security, for any client (admin clients included)."""
        if self.security == "plaintext":
            return {"security_protocol": "PLAINTEXT"}
        kw: dict[str, Any] = {"security_protocol": self.security.upper(), "ssl_check_hostname": self.check_hostname}
        if self.ca_file:
            kw["ssl_cafile"] = self.ca_file
        if self.security == "sasl_ssl":
            # kafka-python names the SCRAM login sasl_plain_*, whatever the mechanism
            kw.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.user, sasl_plain_password=self.password)
        return kw

    def kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, **self.security_kwargs()}

    def secrets(self) -> list[str]:
        """What a log line must never show (shared.redact.Redactor)."""
        return [self.password] if self.password else []


Access = Union[KafkaAccess, str]


def access_of(a: Access) -> KafkaAccess:
    return a if isinstance(a, KafkaAccess) else KafkaAccess(a)


def security_of(client_config: dict[str, Any]) -> dict[str, Any]:
    """The security settings of a live client (`consumer.config`), for another client to the same cluster."""
    return {k: client_config[k] for k in SECURITY_KEYS if client_config.get(k) is not None}


def make_producer(access: Access, client_id: str, **overrides: Any) -> KafkaProducer:
    # metrics_enabled=False: the services export their own Prometheus metrics, and kafka-python's
    # built-in client metrics cost 3-11% of producer time (bench/results/profiles.json).
    # Idempotence (with acks=all, which it requires) makes the producer's own retries after a broker
    # failover write each record once; kafka-python 3 turns it on by default, stated here so it stays.
    # Retries are bounded by time, not count: a leader that died is replaced once the controller fences it
    # (broker.session.timeout.ms, 9 s by default), and five quick retries would give up before that.
    conf = dict(client_id=client_id, acks="all", enable_idempotence=True, linger_ms=5,
                delivery_timeout_ms=DELIVERY_TIMEOUT_S * 1000, request_timeout_ms=20_000, max_block_ms=30_000,
                metrics_enabled=False, **access_of(access).kwargs())
    conf.update(overrides)
    return KafkaProducer(**conf)


def make_consumer(access: Access, group_id: str, client_id: str, **overrides: Any) -> KafkaConsumer:
    conf = dict(group_id=group_id, client_id=client_id, enable_auto_commit=False, auto_offset_reset="earliest",
                session_timeout_ms=10_000, heartbeat_interval_ms=3_000, max_poll_interval_ms=300_000,
                metrics_enabled=False, **access_of(access).kwargs())
    conf.update(overrides)
    return KafkaConsumer(**conf)


def make_admin(access: Access, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**{**access_of(access).kwargs(), **overrides})
