"""The service's Redis connection queue on a real Redis: a freed connection goes to the request
that has waited longest, never to one that just came, whichever of the store's two pools it goes
through (service/stores/redis_pool.py, service/stores/redis_wire.py)."""

import asyncio
import time

from redis.exceptions import ConnectionError as RedisConnectionError

from losswatch.service.stores.redis_pool import STALLED, ConnectionTurns, QueuedConnectionPool
from losswatch.service.stores.redis_wire import WirePool


def test_a_freed_connection_goes_to_the_longest_waiter_not_to_a_newcomer(redis_proc):
    async def go() -> list[str]:
        turns = ConnectionTurns(limit=1, timeout=30, queue_timeout=30)
        pool = QueuedConnectionPool.from_url(redis_proc.url, turns=turns, max_connections=1, timeout=30)
        served: list[str] = []

        async def request(name: str) -> None:
            conn = await pool.get_connection()
            served.append(name)
            await conn.send_command("PING")
            assert await conn.read_response() in (b"PONG", "PONG", True)
            await pool.release(conn)

        try:
            held = await pool.get_connection()
            waiters = [asyncio.create_task(request(f"waiter {i}")) for i in range(3)]
            while turns.waiting < 3:          # all three queued behind the held connection
                await asyncio.sleep(0)
            # the connection is freed while newcomers arrive: they queue behind the waiters
            freed = asyncio.create_task(pool.release(held))
            newcomers = [asyncio.create_task(request(f"newcomer {i}")) for i in range(3)]
            await asyncio.gather(freed, *waiters, *newcomers)
        finally:
            await pool.disconnect()
        return served

    assert asyncio.run(go()) == [f"waiter {i}" for i in range(3)] + [f"newcomer {i}" for i in range(3)]


def test_the_lean_pool_and_redis_pys_queue_on_the_same_turns_in_arrival_order(redis_proc):
    async def go() -> list[str]:
        turns = ConnectionTurns(limit=1, timeout=30, queue_timeout=30)
        pool = QueuedConnectionPool.from_url(redis_proc.url, turns=turns, max_connections=1, timeout=30)
        wire = WirePool(redis_proc.url, turns=turns, connect_timeout=5, reply_timeout=5)
        served: list[str] = []

        async def through_redis_py(name: str) -> None:
            conn = await pool.get_connection()
            served.append(name)
            await pool.release(conn)

        async def through_wire(name: str) -> None:
            assert await wire.execute([("ECHO", name)]) == [name.encode()]
            served.append(name)

        try:
            held = await pool.get_connection()      # the only turn
            calls = []
            for i in range(4):                      # alternate pools, each queued behind the last
                call = through_wire if i % 2 == 0 else through_redis_py
                calls.append(asyncio.create_task(call(f"call {i}")))
                while turns.waiting < i + 1:
                    await asyncio.sleep(0)
            await pool.release(held)
            await asyncio.gather(*calls)
        finally:
            await wire.aclose()
            await pool.disconnect()
        return served

    assert asyncio.run(go()) == [f"call {i}" for i in range(4)]


def _hold_the_loop(seconds: float) -> None:
    """Keep the event loop's thread busy (a process serving a large burst runs its waiters late)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_waiter_woken_late_by_a_busy_process_keeps_its_place_while_redis_answers():
    async def go() -> str:
        turns = ConnectionTurns(limit=1, timeout=0.2, queue_timeout=30)
        await turns.take()                                  # the only turn, held
        waiter = asyncio.create_task(turns.take())
        while turns.waiting < 1:
            await asyncio.sleep(0)
        turns.answered()                                    # Redis answers another call...
        _hold_the_loop(0.5)                                 # ...and the process runs 2.5 timeouts late
        await asyncio.sleep(0)                              # the waiter wakes past its first timeout
        turns.answered()
        await asyncio.sleep(0)
        assert not waiter.done(), "a late wake-up was taken for a stall"
        turns.give()                                        # the turn is freed: the waiter has it
        await asyncio.wait_for(waiter, 5)
        return "served"

    assert asyncio.run(go()) == "served"


def test_a_waiter_gives_up_after_one_store_timeout_with_no_answer_from_redis():
    async def go() -> str:
        turns = ConnectionTurns(limit=1, timeout=0.05, queue_timeout=30)
        await turns.take()
        try:
            await asyncio.wait_for(turns.take(), 10)
        except RedisConnectionError as e:
            return str(e)
        return "served"

    assert asyncio.run(go()) == STALLED
