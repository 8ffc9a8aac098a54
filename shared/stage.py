"""What a stage is, with no Kafka in it: its input, its decoder, and its pure batch function.

    Stage("detector", "frames", Frame.decode, process)

`process(items)` returns exactly one result per input, in order: the list of outputs that input yields
(empty when it yields nothing), or an `InvalidMessage` that says why that input can never be processed.
The shared loop (`shared.kafka_loop`) dead-letters each InvalidMessage with its reason and publishes the
other results; no input is processed twice and no stage metric counts twice.

A stage whose work is vectorized over the batch (one model call for every crop) may instead *raise*
`InvalidMessage(reason, index=i)` naming the offending input. The contract: it raises before it changes
any state and before its heavy work, so that the loop can dead-letter item i and call it again on the
others at no cost. Stateful stages (the matcher's tracks) validate every input first, then update.

Any other exception is the input's fault too (`shared.faults`), unless it is a declared dependency fault
(broker, Redis, GPU memory), which propagates and stops the process without a commit. A stage attributes
what it can to its input (each frame's decode and detection runs under `per_item`); an exception it could
not attribute, in a batch of several, is a stage bug: as a last resort the loop runs those inputs one by
one (counted in facestream_batch_isolations_total) rather than crash-looping on them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar, Union

from shared import faults, metrics

log = logging.getLogger(__name__)

In = TypeVar("In")


class InvalidMessage(Exception):
    """An input that can never be processed (a corrupt JPEG, a crop of the wrong size, a foreign model's
    vectors): it goes to the dead-letter topic with `reason`. `index` names the input of the batch when
    the exception is raised rather than returned."""

    def __init__(self, reason: str, index: int | None = None, kind: str = "invalid"):
        super().__init__(reason)
        self.reason, self.index, self.kind = reason, index, kind  # kind: "schema" (did not decode) or "invalid"


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


Result = Union[list[Output], InvalidMessage]


@dataclass(frozen=True)
class Stage(Generic[In]):
    """What a stage is to the loop: its input, how to decode it, and its pure batch function."""
    name: str
    input_topic: str
    decode: Callable[[bytes], In]
    process: Callable[[list[In]], Sequence[Result]]
    # Called when a poll brings nothing (at most every 200 ms): for work driven by time rather than input,
    # such as ending the matcher's tracks when a camera goes quiet. Its outputs have no offsets to commit.
    idle: Callable[[], list[Output]] | None = None
    # Publish a batch's outputs and commit its input offsets in one Kafka transaction: a consumer reading
    # read_committed sees each output once, even when the process dies mid-batch (the matcher's events).
    transactional: bool = False
    # Called after a batch's (or an idle call's) outputs and offsets are committed, never before: state
    # kept outside Kafka (the matcher's visits in Redis) is written only for what consumers can now see.
    committed: Callable[[], None] | None = None
    # Called when a transaction was aborted because the group moved on mid-batch: the stage forgets what it
    # learnt since the last commit (the batch is read again, here or by the partition's new owner).
    aborted: Callable[[], None] | None = None


def per_item(fn: Callable[[], list[Output]]) -> Result:
    """Run one input's work: its outputs, or an InvalidMessage carrying whatever it raised (dependency
    faults excepted: they propagate)."""
    try:
        return fn()
    except InvalidMessage as e:
        return e
    except Exception as e:
        if faults.is_dependency_fault(e):
            raise
        return InvalidMessage(faults.describe(e))


def run_batch(stage: Stage, items: list) -> list[Result]:
    """`stage.process(items)`, checked: one result per input. A raised InvalidMessage must name its input
    (or be the batch's only one); that input gets it as its result and the others are processed."""
    results: list[Result | None] = [None] * len(items)
    pending = list(range(len(items)))
    while pending:
        try:
            got = list(stage.process([items[i] for i in pending]))
        except InvalidMessage as e:
            k = e.index if e.index is not None else (0 if len(pending) == 1 else None)
            if k is None or not 0 <= k < len(pending):
                raise RuntimeError(f"{stage.name}.process raised InvalidMessage for a batch of {len(pending)} "
                                   f"without naming the input (index={e.index}): {e}") from e
            results[pending.pop(k)] = e
            continue
        except Exception as e:
            if faults.is_dependency_fault(e):
                raise
            if len(pending) == 1:
                results[pending.pop()] = InvalidMessage(faults.describe(e))
                continue
            log.warning("%s: %s in a batch of %d that the stage did not attribute: running them one by one",
                        stage.name, faults.describe(e, 200), len(pending))
            metrics.BATCH_ISOLATIONS.labels(stage.name).inc()
            for i in pending:
                results[i] = run_batch(stage, [items[i]])[0]
            break
        if len(got) != len(pending):
            raise RuntimeError(f"{stage.name}.process returned {len(got)} results for {len(pending)} inputs")
        for i, r in zip(pending, got):
            if not isinstance(r, (list, InvalidMessage)):
                raise RuntimeError(f"{stage.name}.process returned a {type(r).__name__}, not a list of outputs "
                                   "or an InvalidMessage")
            results[i] = r
        break
    return results  # type: ignore[return-value]


def handle(stage: Stage, values: Sequence[bytes]) -> list[Result]:
    """What the loop does with a batch of raw messages, without Kafka: decode each (a message that does
    not decode gets an InvalidMessage of kind "schema"), then `run_batch` the rest. One result per
    message, in order; only a dependency fault raises."""
    from shared.schemas import SchemaError

    results: list[Result | None] = [None] * len(values)
    items, rows = [], []
    for i, raw in enumerate(values):
        try:
            items.append(stage.decode(raw))
            rows.append(i)
        except SchemaError as e:
            results[i] = InvalidMessage(str(e), kind="schema")
        except Exception as e:  # a decoder's bug on odd bytes is still the input's fault
            if faults.is_dependency_fault(e):
                raise
            results[i] = InvalidMessage(faults.describe(e), kind="schema")
    if items:
        for i, r in zip(rows, run_batch(stage, items)):
            results[i] = r
    return results  # type: ignore[return-value]
