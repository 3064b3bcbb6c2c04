"""The calls of one event-loop turn, run together at the start of the next.

Some of a request's work is short and reads a lot of memory that the rest of the request does not:
OPA's evaluator over the compiled policy, OpenSSL's P-256 tables for a signature. Run once per
request, between the request's other work, those reads miss the CPU's caches and the call costs
2-4 times what it costs back to back (docs/performance.md, rounds seven and eight). `TurnBatch`
collects the calls asked during one turn of the event loop and runs them one after another at the
start of the next, so that all but the first run warm. A lone call waits one loop turn.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class TurnBatch(Generic[Item, Result]):
    def __init__(self, work: Callable[[Item], Result]) -> None:
        self._work = work
        # per event loop: a worker's shadow-policy thread runs its own (replay/shadow.py)
        self._asked: dict[asyncio.AbstractEventLoop, list[tuple[Item, asyncio.Future[Result]]]] = {}

    async def run(self, item: Item) -> Result:
        """`work(item)`, run with the other items asked during this loop turn."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Result] = loop.create_future()
        asked = self._asked.get(loop)
        if asked is None:
            asked = self._asked[loop] = []
            loop.call_soon(self._run_asked, loop)
        asked.append((item, answer))
        return await answer

    def _run_asked(self, loop: asyncio.AbstractEventLoop) -> None:
        for item, answer in self._asked.pop(loop, []):
            if answer.cancelled():  # the request went away while it waited
                continue
            try:
                answer.set_result(self._work(item))
            except Exception as exc:  # noqa: BLE001 - this item's own error, raised where it was asked
                answer.set_exception(exc)
