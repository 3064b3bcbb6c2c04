"""TurnBatch: the calls asked during one turn of the event loop run together at the start of the next,
each answered where it was asked."""

import asyncio

import pytest

from iam_proxy.core.loop_batch import TurnBatch


def counting_turns(loop: asyncio.AbstractEventLoop) -> list[int]:
    turn = [0]

    def tick():
        turn[0] += 1
        loop.call_soon(tick)

    tick()
    return turn


def test_the_calls_of_one_turn_run_together_in_order_outside_the_tasks_that_asked():
    ran: list[tuple[int, int, object]] = []  # (item, the loop's turn, the task it ran in)

    async def main():
        turn = counting_turns(asyncio.get_running_loop())
        batch = TurnBatch(lambda item: ran.append((item, turn[0], asyncio.current_task())) or item * 10)
        first = await asyncio.gather(*(batch.run(n) for n in range(5)))
        later = await batch.run(7)  # a later turn makes a batch of its own
        return first, later

    first, later = asyncio.run(main())
    assert (first, later) == ([0, 10, 20, 30, 40], 70)
    assert [item for item, _, _ in ran] == [0, 1, 2, 3, 4, 7]
    assert len({turn for item, turn, _ in ran if item < 5}) == 1 and ran[5][1] > ran[0][1]
    assert {task for _, _, task in ran} == {None}


def test_one_calls_error_is_raised_where_it_was_asked_and_the_others_get_their_results():
    def work(item: int) -> float:
        return 1 / item

    async def main():
        batch = TurnBatch(work)
        return await asyncio.gather(batch.run(2), batch.run(0), batch.run(4), return_exceptions=True)

    halves, error, quarter = asyncio.run(main())
    assert (halves, quarter) == (0.5, 0.25)
    assert isinstance(error, ZeroDivisionError)


def test_a_call_whose_caller_went_away_is_not_run():
    ran: list[str] = []

    async def main():
        batch = TurnBatch(lambda item: ran.append(item) or item)
        gone = asyncio.ensure_future(batch.run("gone"))
        kept = asyncio.ensure_future(batch.run("kept"))
        await asyncio.sleep(0)  # both have asked
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(main()) == "kept"
    assert ran == ["kept"]


def test_every_event_loop_has_its_own_batch():
    batch = TurnBatch(lambda item: item + 1)
    assert asyncio.run(batch.run(1)) == 2
    assert asyncio.run(batch.run(2)) == 3  # a new loop, as a worker's shadow-policy thread runs
    assert batch._asked == {}
