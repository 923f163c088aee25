"""The Redis store's lean connection pool (service/stores/redis_wire.py) against a real
redis-server: the replies and errors redis-py gives, a connection whose call did not finish is
never reused, the connection limit, authentication and the database of the URL, and a
restarted Redis."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rexc

from losswatch.service.stores.redis_pool import STALLED, ConnectionTurns
from losswatch.service.stores.redis_wire import WirePool, serves


def pool(url: str, max_connections: int = 8, **kw) -> WirePool:
    opts = {"connect_timeout": 2.0, "reply_timeout": 2.0, **kw}
    turns = ConnectionTurns(limit=max_connections, timeout=opts["connect_timeout"],
                            queue_timeout=opts["connect_timeout"])
    return WirePool(url, turns=turns, **opts)


async def until(cond) -> None:
    """Let the event loop run until ``cond()`` holds."""
    while not cond():
        await asyncio.sleep(0.005)


def test_replies_and_error_replies_are_those_redis_py_gives(redis_proc):
    script = "return {1, ARGV[1], {tonumber(ARGV[2]), false}, redis.call('HMGET', KEYS[1], 'a', 'b')}"

    async def go():
        p = pool(redis_proc.url)
        r = aioredis.Redis.from_url(redis_proc.url)
        try:
            # the commands the store sends this way, as it sends them
            assert await p.execute([("HSET", "h", "a", b"\x00\xff"), ("ZADD", "z", repr(1.7e9 + 0.125), "m"),
                                    ("ZREMRANGEBYSCORE", "z", "-inf", repr(1.0))]) == [1, 1, 0]
            assert await r.zscore("z", "m") == 1.7e9 + 0.125
            sha = (await p.execute([("SCRIPT", "LOAD", script)]))[0].decode()
            for cmd in (("HMGET", "h", "a", "nope"), ("EVALSHA", sha, 1, "h", "x", 2**62)):
                assert await p.execute([cmd]) == [await r.execute_command(*cmd)]

            # an error reply raises redis-py's exception for it, after every reply was read:
            # the connection's next call gets its own reply
            with pytest.raises(rexc.ResponseError) as e:
                await p.execute([("SET", "s", "v"), ("HGET", "s", "f"), ("ECHO", "after")])
            assert e.value.status_code == "WRONGTYPE"
            with pytest.raises(rexc.NoScriptError):
                await p.execute([("EVALSHA", "0" * 40, 0)])
            assert await p.execute([("ECHO", "next")]) == [b"next"]
            assert await p.execute([("GET", "s")]) == [b"v"]
            assert p._open == 1
        finally:
            await p.aclose()
            await r.aclose()

    asyncio.run(go())


@pytest.mark.timeout(60)
def test_a_call_that_did_not_finish_never_hands_its_reply_to_a_later_call(redis_proc):
    """Redis stalls (SIGSTOP): a call past its reply timeout fails, and one cancelled while it
    waits is abandoned; once Redis answers again, their late replies reach nobody."""
    pid = redis_proc.proc.pid

    async def go():
        p = pool(redis_proc.url, reply_timeout=0.3)
        try:
            assert await p.execute([("ECHO", "warm")]) == [b"warm"]
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(rexc.TimeoutError):
                    await p.execute([("ECHO", "timed out")])
                waiting = asyncio.create_task(p.execute([("ECHO", "cancelled")]))
                await until(lambda: p._open == 1 and not p._idle)
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
            finally:
                os.kill(pid, signal.SIGCONT)
            assert p._open == 0
            assert await p.execute([("ECHO", "mine")]) == [b"mine"]
        finally:
            await p.aclose()

    asyncio.run(go())


@pytest.mark.timeout(60)
def test_calls_past_the_connection_limit_wait_for_a_free_connection(redis_proc):
    pid = redis_proc.proc.pid

    async def go():
        p = pool(redis_proc.url, max_connections=2, connect_timeout=0.3, reply_timeout=10)
        try:
            out = await asyncio.gather(*(p.execute([("ECHO", str(i))]) for i in range(20)))
            assert out == [[str(i).encode()] for i in range(20)]
            assert p._open == 2

            # both connections busy (Redis stalled): a third call gives up waiting for one, and
            # says that Redis did not answer (not that a burst outran the queue)
            os.kill(pid, signal.SIGSTOP)
            try:
                busy = [asyncio.create_task(p.execute([("ECHO", f"busy {i}")])) for i in range(2)]
                await until(lambda: not p._idle)
                with pytest.raises(rexc.ConnectionError, match=STALLED):
                    await p.execute([("ECHO", "third")])
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await asyncio.gather(*busy) == [[b"busy 0"], [b"busy 1"]]
            assert p._open == 2
        finally:
            await p.aclose()

    asyncio.run(go())


def test_the_password_and_the_database_of_the_url(redis_factory):
    srv = redis_factory()
    admin = srv.client()
    admin.config_set("requirepass", "s3cret")         # (this connection stays authenticated)

    async def go():
        p = pool(f"redis://:s3cret@127.0.0.1:{srv.port}/3")
        wrong = pool(f"redis://:nope@127.0.0.1:{srv.port}/0")
        try:
            assert await p.execute([("SET", "k", "in db 3")]) == [b"OK"]
            with pytest.raises(rexc.AuthenticationError):      # a ConnectionError: 503 "unreachable"
                await wrong.execute([("GET", "k")])
            assert wrong._open == 0
        finally:
            await p.aclose()
            await wrong.aclose()

    asyncio.run(go())
    assert admin.get("k") is None
    admin.execute_command("SELECT", "3")
    assert admin.get("k") == b"in db 3"


def test_a_restarted_redis_gets_new_connections(redis_factory):
    srv = redis_factory()

    async def go():
        p = pool(srv.url)
        try:
            assert await p.execute([("SET", "a", "1")]) == [b"OK"]
            srv.kill9()
            await until(lambda: p._idle[0].closed)       # the loop sees the connection go
            with pytest.raises(rexc.ConnectionError):
                await p.execute([("GET", "a")])          # Redis is down
            srv.start()
            assert await p.execute([("ECHO", "back")]) == [b"back"]
        finally:
            await p.aclose()

    asyncio.run(go())


def test_a_unix_socket_and_its_database(redis_factory, tmp_path):
    sock = tmp_path / "redis.sock"
    srv = redis_factory(extra=["--unixsocket", str(sock)])

    async def go():
        p = pool(f"unix://{sock}?db=2")
        try:
            assert await p.execute([("SET", "k", "by socket"), ("ECHO", "x")]) == [b"OK", b"x"]
        finally:
            await p.aclose()

    asyncio.run(go())
    admin = srv.client()
    admin.execute_command("SELECT", "2")
    assert admin.get("k") == b"by socket"


def test_it_serves_plain_tcp_and_unix_sockets_only():
    assert serves("redis://h:1/0") and serves("unix:///tmp/r.sock")
    assert not serves("rediss://h:1/0") and not serves("redis+cluster://h:1")
    with pytest.raises(ValueError):
        pool("rediss://h:1/0")
