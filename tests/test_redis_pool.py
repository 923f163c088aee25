"""The service's Redis connection queue on a real Redis: a freed connection goes to the request
that has waited longest, never to one that just came (service/stores/redis_pool.py)."""

import asyncio

from losswatch.service.stores.redis_pool import QueuedConnectionPool


def test_a_freed_connection_goes_to_the_longest_waiter_not_to_a_newcomer(redis_proc):
    async def go() -> list[str]:
        pool = QueuedConnectionPool.from_url(redis_proc.url, max_connections=1, timeout=30, queue_timeout=30)
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
            while len(pool._waiters) < 3:          # all three queued behind the held connection
                await asyncio.sleep(0)
            # the connection is freed while newcomers arrive: they queue behind the waiters
            freed = asyncio.create_task(pool.release(held))
            newcomers = [asyncio.create_task(request(f"newcomer {i}")) for i in range(3)]
            await asyncio.gather(freed, *waiters, *newcomers)
        finally:
            await pool.disconnect()
        return served

    assert asyncio.run(go()) == [f"waiter {i}" for i in range(3)] + [f"newcomer {i}" for i in range(3)]
