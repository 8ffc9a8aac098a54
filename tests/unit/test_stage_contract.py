"""`shared.stage.run_batch`: the loop's side of the Stage contract, with stand-in stages (pure logic)."""
import pytest

from shared.stage import InvalidMessage, Output, Stage, per_item, run_batch


def out(x) -> list[Output]:
    return [Output("t", None, str(x).encode())]


def stage(process) -> Stage:
    return Stage("s", "in", lambda b: b, process)


def test_returned_invalid_messages_stand_in_place_and_nothing_is_run_twice():
    calls = []

    def process(items):
        calls.append(list(items))
        return [InvalidMessage(f"bad {x}") if x < 0 else out(x) for x in items]

    res = run_batch(stage(process), [1, -2, 3])
    assert calls == [[1, -2, 3]]
    assert res[0] == out(1) and res[2] == out(3) and isinstance(res[1], InvalidMessage) and res[1].reason == "bad -2"


def test_a_raised_invalid_message_with_its_index_costs_that_item_only():
    calls = []

    def process(items):
        calls.append(list(items))
        for i, x in enumerate(items):  # validate first, as the contract asks, then work
            if x < 0:
                raise InvalidMessage(f"negative {x}", index=i)
        return [out(x) for x in items]

    res = run_batch(stage(process), [1, -2, 3, -4])
    assert [r if isinstance(r, list) else r.reason for r in res] == [out(1), "negative -2", out(3), "negative -4"]
    assert calls[-1] == [1, 3], "the valid items processed together, once"


def test_a_lone_item_may_raise_without_an_index():
    def process(items):
        raise InvalidMessage("no")

    (res,) = run_batch(stage(process), ["x"])
    assert isinstance(res, InvalidMessage)


@pytest.mark.parametrize("process, message", [
    (lambda items: [out(1)], "returned 1 results for 2 inputs"),
    (lambda items: [out(1), None], "not a list of outputs"),
    (lambda items: (_ for _ in ()).throw(InvalidMessage("which one?")), "without naming the input"),
    (lambda items: (_ for _ in ()).throw(InvalidMessage("off the end", index=5)), "without naming the input"),
])
def test_a_stage_that_breaks_the_contract_is_a_bug_not_a_dead_letter(process, message):
    with pytest.raises(RuntimeError, match=message):
        run_batch(stage(process), ["a", "b"])


def test_any_other_exception_is_the_inputs_fault_and_says_what_it_was():
    def process(items):
        return [per_item(lambda: out(1 // x)) for x in items]

    res = run_batch(stage(process), [1, 0, 2])
    assert res[0] == out(1) and res[2] == out(0)
    assert isinstance(res[1], InvalidMessage) and res[1].reason == "ZeroDivisionError: integer division or modulo by zero"


def test_an_unattributed_exception_in_a_batch_isolates_it_instead_of_crash_looping():
    from shared import metrics

    def process(items):
        if any(x == "bomb" for x in items):
            raise IndexError("list index out of range")
        return [out(x) for x in items]

    before = metrics.BATCH_ISOLATIONS.labels("s")._value.get()
    res = run_batch(stage(process), ["a", "bomb", "b"])
    assert res[0] == out("a") and res[2] == out("b") and res[1].reason == "IndexError: list index out of range"
    assert metrics.BATCH_ISOLATIONS.labels("s")._value.get() == before + 1


@pytest.mark.parametrize("fault", ["kafka", "redis"])
def test_a_dependency_fault_stops_the_batch_instead_of_dead_lettering_good_input(fault):
    import kafka.errors
    import redis.exceptions

    exc = kafka.errors.KafkaTimeoutError("broker gone") if fault == "kafka" else \
        redis.exceptions.ConnectionError("Connection refused")

    def process(items):
        return [per_item(lambda: (_ for _ in ()).throw(exc)) for x in items]

    with pytest.raises(type(exc)):
        run_batch(stage(process), ["a", "b"])
    with pytest.raises(type(exc)):
        run_batch(stage(lambda items: (_ for _ in ()).throw(exc)), ["a"])
