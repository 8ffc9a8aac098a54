"""Kafka transport of real JPEG frames: kafka-python against kcat (librdkafka), on the same broker.

Payloads are the exact bytes ingest publishes (a msgpack `Frame` around a quality-85 JPEG of a real video
frame) at 640x360 and 1280x720. Per size, one single-partition topic; per repeat, interleaved:
  kafka-python producer  make_producer's settings (acks=all, linger 5 ms, idempotent), send N, flush;
  kafka-python tuned     the same with batch_size = max_request_size (~1 MB; librdkafka's default is
                         1 MB too) and its client metrics off: kafka-python's 16 kB default closes a
                         batch per frame and sends one batch per partition per request, so each frame
                         costs a round trip;
  kcat producer          `kcat -P` with one file per message, acks=all, linger 5 ms;
  kafka-python consumer  assign + seek to the first of N fresh messages, poll until N (no group);
  kcat consumer          `kcat -C -o OFFSET -c N` (no group), printing only offsets.
Each time runs from creating the client (starting kcat) to the last acknowledgement or message, so both
sides pay their connection set-up; N is large enough (about 20 MB) for that to be noise.
"""
from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.common import Settings, interleaved, ratio, stats
from bench.inputs import frame_messages, video_frames
from bench.kafka_util import Offsets, Topics
from shared.kafka_clients import Access, access_of

SIZES = {"640x360": 1000, "1280x720": 200}  # frames per transfer (full run)
QUICK_SIZES = {"640x360": 200, "1280x720": 40}
MAX_REQUEST = 965_536  # what ingest allows (900 kB frames + envelope), for both clients


def _kp_produce(bootstrap: Access, topic: str, payloads: list[bytes], tuned: bool = False) -> float:
    t0 = time.perf_counter()
    extra = {"batch_size": MAX_REQUEST, "metrics_enabled": False} if tuned else {}
    p = KafkaProducer(acks="all", linger_ms=5, max_request_size=MAX_REQUEST, **extra, **access_of(bootstrap).kwargs())
    futures = [p.send(topic, value=v, partition=0) for v in payloads]
    p.flush()
    for f in futures:
        f.get(timeout=30)
    elapsed = time.perf_counter() - t0
    p.close(timeout=10)
    return elapsed


def _kcat_produce(bootstrap: Access, topic: str, files: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(["kcat", "-P", "-b", access_of(bootstrap).bootstrap, "-t", topic, "-p", "0", "-X", "acks=all", "-X", "linger.ms=5",
                    "-X", f"message.max.bytes={MAX_REQUEST}", *files], check=True, capture_output=True, timeout=300)
    return time.perf_counter() - t0


def _kp_consume(bootstrap: Access, topic: str, start: int, n: int) -> float:
    t0 = time.perf_counter()
    c = KafkaConsumer(enable_auto_commit=False, **access_of(bootstrap).kwargs())
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, start)
    got = 0
    while got < n:
        for recs in c.poll(timeout_ms=1000).values():
            got += len(recs)
    elapsed = time.perf_counter() - t0
    c.close()
    return elapsed


def _kcat_consume(bootstrap: Access, topic: str, start: int, n: int) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(["kcat", "-C", "-b", access_of(bootstrap).bootstrap, "-t", topic, "-p", "0", "-o", str(start), "-c", str(n),
                          "-e", "-q", "-f", "%o\n"], check=True, capture_output=True, text=True, timeout=300).stdout
    elapsed = time.perf_counter() - t0
    if len(out.split()) != n:
        raise RuntimeError(f"kcat consumed {len(out.split())} of {n} messages")
    return elapsed


def run(settings: Settings) -> dict[str, Any]:
    repeats = 1 if settings.quick else 3
    sizes = QUICK_SIZES if settings.quick else SIZES
    by_size: dict[str, Any] = {}
    if settings.kafka.security != "plaintext":
        raise RuntimeError("the kafka part compares with kcat, whose librdkafka (2.0.2 in Debian) fails SCRAM logins "
                           "to Kafka 4: run it against a plaintext broker; the kafka_security part measures TLS + SASL")
    with Topics(settings.kafka) as topics, tempfile.TemporaryDirectory() as tmp:
        offsets = Offsets(settings.kafka)
        try:
            for size, n in sizes.items():
                distinct = [m.encode() for m in frame_messages(video_frames(size, 20), "bench-cam")]
                files = []
                for i, v in enumerate(distinct):
                    (Path(tmp) / f"{size}-{i}.bin").write_bytes(v)
                    files.append(str(Path(tmp) / f"{size}-{i}.bin"))
                payloads = [distinct[i % len(distinct)] for i in range(n)]
                topic = topics.make(f"bench-transport-{size}", 1)
                last: dict[str, int] = {}  # first offset of the latest batch each producer wrote

                def produce_with(fn, *args) -> float:
                    start = offsets.end(topic)
                    elapsed = fn(settings.kafka, topic, *args)
                    last["start"] = start
                    return elapsed

                def consume_with(fn) -> float:
                    return fn(settings.kafka, topic, last["start"], n)

                times = interleaved({
                    "kafka_python_produce": lambda: produce_with(_kp_produce, payloads),
                    "kafka_python_tuned_produce": lambda: produce_with(_kp_produce, payloads, True),
                    "kcat_produce": lambda: produce_with(_kcat_produce, [files[i % len(files)] for i in range(n)]),
                    "kafka_python_consume": lambda: consume_with(_kp_consume),
                    "kcat_consume": lambda: consume_with(_kcat_consume),
                }, repeats)
                mb = sum(len(p) for p in payloads) / 1e6
                by_size[size] = {
                    "frames": n, "payload_bytes_mean": mb * 1e6 / n,
                    "frames_per_s": {k: n / stats(v)["median"] for k, v in times.items()},
                    "mb_per_s": {k: mb / stats(v)["median"] for k, v in times.items()},
                    "seconds": {k: stats(v) for k, v in times.items()},
                    "ratio_kafka_python_to_kcat": {
                        "produce": ratio(times["kcat_produce"], times["kafka_python_produce"]),
                        "produce_tuned": ratio(times["kcat_produce"], times["kafka_python_tuned_produce"]),
                        "consume": ratio(times["kcat_consume"], times["kafka_python_consume"])},
                }
        finally:
            offsets.close()
    return {
        "config": {"frames": sizes, "repeats": repeats, "partitions": 1, "acks": "all", "linger_ms": 5,
                   "payload": "msgpack Frame (schema frames/v1) around a quality-85 JPEG of a real video frame"},
        "method": "the four transfers interleaved per repeat after one warm-up round; rates from the median "
                  "repeat; ratio = median over repeats of kcat time / kafka-python time (above 1: kafka-python "
                  "is faster)",
        "raw_component": "kcat",
        "by_size": by_size,
    }
