"""The fault suite's TCP proxy: passes bytes, holds them while paused, cuts and refuses connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def echo_port() -> AsyncIterator[int]:
    """A loopback echo server."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _roundtrip(port: int, payload: bytes, timeout_s: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout_s)
    finally:
        writer.close()


async def test_passes_bytes_both_ways(echo_port: int) -> None:
    with TcpProxy(upstream_port=echo_port) as proxy:
        assert await _roundtrip(proxy.port, b"hello" * 1000) == b"hello" * 1000
        assert proxy.accepted == {"other": 1}


async def test_pause_holds_bytes_until_resume_and_loses_none(echo_port: int) -> None:
    with TcpProxy(upstream_port=echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await asyncio.to_thread(proxy.pause)
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.5)
        await asyncio.to_thread(proxy.resume)
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
        writer.close()


async def test_cut_closes_connections_and_refuses_new_ones_until_restore(echo_port: int) -> None:
    with TcpProxy(upstream_port=echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        # The kernel completes the handshake before the proxy's accept handler has run.
        for _ in range(100):
            if await asyncio.to_thread(proxy.connection_count) == 1:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(proxy.connection_count) == 1
        await asyncio.to_thread(proxy.cut)
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await _roundtrip(proxy.port, b"refused")
        await asyncio.to_thread(proxy.restore)
        assert await _roundtrip(proxy.port, b"back") == b"back"


async def test_faults_apply_to_one_group_only(echo_port: int) -> None:
    groups = iter(["dispatch", "intake"])
    with TcpProxy(upstream_port=echo_port, classify=lambda _port: next(groups)) as proxy:
        d_reader, d_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        i_reader, i_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await asyncio.sleep(0.1)
        await asyncio.to_thread(proxy.pause, "dispatch")
        d_writer.write(b"d")
        i_writer.write(b"i")
        assert await asyncio.wait_for(i_reader.readexactly(1), 5) == b"i"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(d_reader.readexactly(1), 0.5)
        await asyncio.to_thread(proxy.resume, "dispatch")
        assert await asyncio.wait_for(d_reader.readexactly(1), 5) == b"d"
        d_writer.close()
        i_writer.close()
