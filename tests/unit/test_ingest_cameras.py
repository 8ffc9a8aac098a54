"""Ingest's pure decisions: backoff bounds and jitter, file pacing, the fps cap, encoding under the limit."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.ingest.cameras import Backoff, FpsGate, Pacer


def play(pacer: Pacer, media_times: list[float], decode_s: float = 0.0) -> list[float]:
    """Deliver frames through `pacer` on a fake clock; return the delivery times."""
    now, out = 100.0, []
    for t in media_times:
        now += decode_s
        now += pacer.delay(t, now)
        out.append(now)
    return out


def test_backoff_doubles_up_to_the_cap_and_jitter_stays_in_bounds():
    b = Backoff(initial_s=0.5, max_s=30.0, jitter=0.5)
    rng = random.Random(7)
    for attempt in range(40):
        base = min(30.0, 0.5 * 2 ** attempt)
        delays = [b.delay(attempt, rng.random()) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays), attempt
        assert max(delays) - min(delays) > base * 0.3, "jitter must spread the retries"
    assert b.delay(0, 0.0) == 0.5 and b.delay(3, 0.0) == 4.0 and b.delay(10, 0.0) == 30.0


def test_backoff_without_jitter_is_deterministic_and_huge_attempts_do_not_overflow():
    b = Backoff(initial_s=1.0, max_s=10.0, jitter=0.0)
    assert [b.delay(n, random.random()) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert b.delay(10_000, 0.99) == 10.0
    assert Backoff(1.0, 10.0, 1.0).delay(2, 0.999) == pytest.approx(0.004)  # full jitter: near 0, never below


def test_pacer_delivers_a_file_at_its_own_frame_rate():
    times = play(Pacer(), [i / 30 for i in range(90)], decode_s=0.004)
    assert times[-1] - times[0] == pytest.approx(89 / 30, abs=0.005)
    assert np.diff(times) == pytest.approx(np.full(89, 1 / 30), abs=0.005)


def test_pacer_plays_on_after_falling_behind_instead_of_bursting():
    pacer = Pacer(max_lag_s=0.5)
    times = play(pacer, [i / 30 for i in range(30)])
    # the machine stalls for 2 s: the next frame is late, and then the clip goes on at its own rate
    late = times[-1] + 2.0
    assert pacer.delay(30 / 30, late) == 0.0
    assert pacer.delay(31 / 30, late) == pytest.approx(1 / 30)


def test_pacer_does_not_wait_out_a_gap_in_a_broken_file():
    pacer = Pacer(max_wait_s=2.0)
    assert pacer.delay(0.0, 10.0) == 0.0
    assert pacer.delay(600.0, 10.04) == 0.0  # a ten-minute jump in timestamps is not ten minutes of silence
    assert pacer.delay(600.0 + 1 / 30, 10.04) == pytest.approx(1 / 30)


@pytest.mark.parametrize("cap, kept_per_30", [(15, 15), (10, 10), (20, 20), (30, 30), (60, 30), (None, 30)])
def test_fps_gate_keeps_the_cap_rate_evenly(cap, kept_per_30):
    gate = FpsGate(cap)
    kept = [i for i in range(300) if gate.admit(i / 30)]
    assert len(kept) == kept_per_30 * 10
    gaps = set(np.diff(kept))
    assert max(gaps) - min(gaps) <= 1, f"uneven spacing {gaps}"


def test_fps_gate_tolerates_arrival_jitter_on_a_live_stream():
    rng = random.Random(3)
    gate = FpsGate(15)
    arrivals = [i / 30 + rng.uniform(-0.006, 0.006) for i in range(300)]
    kept = sum(gate.admit(t) for t in arrivals)
    assert 140 <= kept <= 155  # about 15 fps out of 30, not 10 as a strict gate would give


def test_fps_gate_restarts_after_a_stall_without_a_burst():
    gate = FpsGate(10)
    assert gate.admit(0.0) and not gate.admit(0.05)
    assert gate.admit(5.0)            # the stream stalled for 5 s
    assert not gate.admit(5.03)       # the frames queued behind the stall do not all pass
    assert gate.admit(5.1)


def test_session_ids_are_ulids_that_sort_by_start_time():
    from services.ingest.cameras import session_id

    # the ULID spec's example: 1469922850259 ms is 01ARZ3NDEK; 26 characters of Crockford base32
    assert session_id(1469922850259, 0) == "01ARZ3NDEK" + "0" * 16
    assert session_id(0, 0) == "0" * 26 and session_id((1 << 48) - 1, (1 << 80) - 1) == "7" + "Z" * 25
    rng = random.Random(3)
    ids = [session_id(ms, rng.getrandbits(80)) for ms in (1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000)]
    assert ids == sorted(ids) and all(len(i) == 26 and i.isalnum() and i.isupper() for i in ids)
    assert len({session_id(1_700_000_000_000, rng.getrandbits(80)) for _ in range(1000)}) == 1000
    for bad in ((-1, 0), (1 << 48, 0), (0, 1 << 80)):
        with pytest.raises(ValueError):
            session_id(*bad)
