"""What ingest hands the producer, and what it does when the broker refuses a frame (a fake producer)."""
from __future__ import annotations

import threading

import pytest
from kafka.errors import KafkaError
from kafka.future import Future

from services.ingest.main import Publisher
from shared import metrics
from shared.schemas import Frame

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[Future] = []

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        self.sent.append((topic, key, value))
        self.futures.append(Future())
        return self.futures[-1]


def test_frames_are_keyed_by_camera_and_counted_once_acknowledged():
    producer, failed = FakeProducer(), threading.Event()
    publish = Publisher(producer, "frames-unit", failed)
    before = metrics.MESSAGES_OUT.labels("ingest", "frames-unit")._value.get()
    frame = Frame("door", 0, 1700000000.5, 4, 3, JPEG)
    publish(frame)
    (topic, key, value), = producer.sent
    assert (topic, key, Frame.decode(value)) == ("frames-unit", b"door", frame)
    assert metrics.MESSAGES_OUT.labels("ingest", "frames-unit")._value.get() == before  # not acknowledged yet
    producer.futures[0].success(None)
    assert metrics.MESSAGES_OUT.labels("ingest", "frames-unit")._value.get() == before + 1


def test_a_refused_frame_stops_publishing_so_no_gap_follows_it():
    producer, failed = FakeProducer(), threading.Event()
    publish = Publisher(producer, "frames-unit", failed)
    publish(Frame("door", 0, 1.0, 4, 3, JPEG))
    producer.futures[0].failure(KafkaError("message too large"))
    assert failed.is_set() and "message too large" in str(publish.error)
    with pytest.raises(RuntimeError, match="broker refused an earlier frame"):
        publish(Frame("door", 1, 1.1, 4, 3, JPEG))
    assert len(producer.sent) == 1
