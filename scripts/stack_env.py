"""What a facestream client needs to reach this stack, as files of FACESTREAM_* settings (shared/config.py
reads them): $RUN/client.env (Redis as admin), $RUN/matcher.env and $RUN/enroll.env (as those users).
The Kafka login is `facestream` in all three. One `NAME=value` a line, shell-quoted where needed:
`set -a; . $RUN/matcher.env; set +a` exports them. Passwords are given by file, never inline.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from scripts import stack_redis
from scripts.stack_kafka import SCRAM
from scripts.stack_mode import RUN, Mode
from scripts.stack_secrets import ensure_tls, password_file

ROLES = {"client": "admin", "matcher": "matcher", "enroll": "enroll"}  # file -> Redis user


def kafka_settings(mode: Mode) -> dict[str, str]:
    env = {"FACESTREAM_KAFKA_BOOTSTRAP": mode.bootstrap, "FACESTREAM_KAFKA_SECURITY": mode.kafka_security}
    if mode.kafka_secure:
        env.update({"FACESTREAM_KAFKA_SASL_MECHANISM": SCRAM, "FACESTREAM_KAFKA_USER": "facestream",
                    "FACESTREAM_KAFKA_PASSWORD_FILE": str(password_file("kafka-facestream")),
                    "FACESTREAM_KAFKA_CA_FILE": str(ensure_tls().ca)})
    return env


def redis_settings(mode: Mode, user: str) -> dict[str, str]:
    env = {"FACESTREAM_REDIS_URL": stack_redis.url(mode)}
    if mode.redis_secure:
        env.update({"FACESTREAM_REDIS_CA_FILE": str(ensure_tls().ca), "FACESTREAM_REDIS_USER": user,
                    "FACESTREAM_REDIS_PASSWORD_FILE": str(password_file(f"redis-{user}"))})
    return env


def write_env_files(mode: Mode) -> list[Path]:
    written = []
    for role, user in ROLES.items():
        path = RUN / f"{role}.env"
        settings = {**kafka_settings(mode), **redis_settings(mode, user)}
        path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items()))
        written.append(path)
    return written

