"""What TLS + SASL (SCRAM-SHA-512) costs a kafka-python client, in frames/s, against plaintext, same run.

Two single-broker stacks of their own (scripts/extra_stack.py: same heap, same machine, started side by side),
one plaintext and one SASL_SSL; the same real 640x360 JPEG frames are produced (acks=all, linger 5 ms, as
ingest does, batch_size as ingest sets it) and consumed back on each, the four transfers interleaved per
repeat after a warm-up round. `ratio_sasl_ssl_to_plaintext` is the median over repeats of plaintext time /
SASL_SSL time: 0.8 means TLS + SASL leaves 80% of the plaintext rate.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import Settings, interleaved, ratio, stats
from bench.inputs import frame_messages, video_frames
from bench.kafka_transport import _kp_consume, _kp_produce
from bench.kafka_util import Offsets, Topics
from scripts.extra_stack import ExtraStack
from shared.kafka_clients import KafkaAccess

SIZE, FRAMES, QUICK_FRAMES = "640x360", 1000, 200


def _access(stack: ExtraStack) -> KafkaAccess:
    env = stack.env
    if env.get("FACESTREAM_KAFKA_SECURITY", "plaintext") == "plaintext":
        return KafkaAccess(stack.kafka_bootstrap)
    return KafkaAccess(stack.kafka_bootstrap, "sasl_ssl", env["FACESTREAM_KAFKA_SASL_MECHANISM"],
                       env["FACESTREAM_KAFKA_USER"], stack.secret("kafka-facestream"), env["FACESTREAM_KAFKA_CA_FILE"])


def run(settings: Settings) -> dict[str, Any]:
    repeats = 1 if settings.quick else 3
    n = QUICK_FRAMES if settings.quick else FRAMES
    distinct = [m.encode() for m in frame_messages(video_frames(SIZE, 20), "bench-cam")]
    payloads = [distinct[i % len(distinct)] for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp, \
            ExtraStack(Path(tmp) / "plain") as plain, \
            ExtraStack(Path(tmp) / "locked", kafka_security="sasl_ssl") as locked:
        access = {"plaintext": _access(plain), "sasl_ssl": _access(locked)}
        topics = {k: Topics(a) for k, a in access.items()}
        offsets = {k: Offsets(a) for k, a in access.items()}
        try:
            topic = {k: topics[k].make("bench-security", 1) for k in access}
            last: dict[str, int] = {}

            def produce(kind: str) -> float:
                start = offsets[kind].end(topic[kind])
                elapsed = _kp_produce(access[kind], topic[kind], payloads, tuned=True)
                last[kind] = start
                return elapsed

            def consume(kind: str) -> float:
                return _kp_consume(access[kind], topic[kind], last[kind], n)

            times = interleaved({f"{k}_{op}": (lambda k=k, op=op: produce(k) if op == "produce" else consume(k))
                                 for k in access for op in ("produce", "consume")}, repeats)
        finally:
            for o in offsets.values():
                o.close()
            for t in topics.values():
                t.close()
    mb = sum(len(p) for p in payloads) / 1e6
    return {
        "config": {"size": SIZE, "frames": n, "repeats": repeats, "partitions": 1, "acks": "all",
                   "sasl_mechanism": "SCRAM-SHA-512", "tls": "TLS 1.2+ (the JVM's default), CA made by stack.py"},
        "method": "two one-broker stacks of their own, the produce and consume transfers of each interleaved per "
                  "repeat after one warm-up round; rates from the median repeat",
        "frames_per_s": {k: n / stats(v)["median"] for k, v in times.items()},
        "mb_per_s": {k: mb / stats(v)["median"] for k, v in times.items()},
        "seconds": {k: stats(v) for k, v in times.items()},
        "ratio_sasl_ssl_to_plaintext": {"produce": ratio(times["plaintext_produce"], times["sasl_ssl_produce"]),
                                        "consume": ratio(times["plaintext_consume"], times["sasl_ssl_consume"])},
    }
