"""The whole pipeline behind locked doors: Kafka with SASL_SSL (SCRAM-SHA-512 over TLS, a CA made on the
spot) and Redis with TLS and ACL users, started by `scripts/stack.py` (FACESTREAM_KAFKA_SECURITY=sasl_ssl,
FACESTREAM_REDIS_SECURITY=acl_tls). Every client reads its credentials from the settings, passwords from
files: the gallery enrolls as Redis's `enroll` user, the matcher reads the gallery and writes its visits as
`matcher`, and `facestream events` reads the identity events read_committed.

It shows: a real clip over RTSP is identified end to end, and no password appears in any log. That the
same stack refuses a plaintext client, a wrong password and an unauthenticated Redis client, and that the
matcher's Redis user cannot write the gallery, is shown on its own in test_stack_modes.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from services.local_pipeline import LocalPipeline
from tests.conftest import ROOT
from scripts.extra_stack import ExtraStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    with ExtraStack(tmp_path_factory.mktemp("locked"), kafka_security="sasl_ssl", redis_security="acl_tls") as s:
        yield s


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACESTREAM_") or k == "FACESTREAM_DATA"}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_the_pipeline_runs_end_to_end_over_tls_and_logins(locked, data_dir, rtsp_cameras, tmp_path):
    run = uuid.uuid4().hex[:8]
    enroll = cli(locked.role_env("enroll"), "gallery", "enroll-all", str(data_dir / "videos/enroll"),
                 "--pick", "largest")
    assert enroll.returncode == 0, enroll.stderr
    client, as_matcher = locked.role_env("client"), locked.role_env("matcher")
    assert client["FACESTREAM_KAFKA_SECURITY"] == "sasl_ssl" and client["FACESTREAM_REDIS_URL"].startswith("rediss://")
    pipe = LocalPipeline(tmp_path / "logs", env=client)
    matcher_pipe = LocalPipeline(tmp_path / "logs", env=as_matcher)
    try:
        pipe.start("detector", "--group-id", f"sec-det-{run}", wait_ready=False)
        pipe.start("embedder", "--group-id", f"sec-emb-{run}", "--threads", "1", wait_ready=False)
        matcher = matcher_pipe.start("matcher", "--group-id", f"sec-match-{run}", wait_ready=False)
        for svc in [*pipe.services, matcher]:
            pipe.wait_ready(svc)
        url = rtsp_cameras({"locked-cam": data_dir / "videos/biden_2021_7s.mp4"})["locked-cam"]
        ingest = pipe.start("ingest", "--camera", f"locked-cam={url}", "--fps", "8", "--max-width", "960",
                            "--max-frames", "56", "--metrics-host", "127.0.0.1", wait_ready=False)
        assert ingest.proc.wait(timeout=300) == 0, ingest.log_tail()
        events = cli(client, "events", "--json", "--from-beginning", "--idle-exit-s", "25", "--camera", "locked-cam",
                     timeout=240)
        assert events.returncode == 0, events.stderr
        got = [json.loads(line) for line in events.stdout.splitlines() if line.strip()]
        assert [e["identity"] for e in got if e["kind"] == "identified"] == ["Joe_Biden"], got
        # the matcher wrote its visit as `matcher`, under the visits prefix its ACL allows
        admin = locked.redis_client("client")
        assert any(admin.scan_iter("facestream:visits:locked-cam:*")), "the visit is in Redis"
        codes = {**pipe.stop(), **matcher_pipe.stop()}
        assert all(c == 0 for c in codes.values()), codes
    finally:
        pipe.stop()
        matcher_pipe.stop()
    secrets = [locked.secret(n) for n in ("kafka-facestream", "kafka-admin", "redis-matcher", "redis-enroll",
                                          "redis-admin")]
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log")) + enroll.stderr
    assert "sasl_ssl" in logs and not [s for s in secrets if s in logs], "no password in any log line"
