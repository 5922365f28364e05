#!/usr/bin/env python3
"""Opens N keep-alive connections to 127.0.0.1:PORT, sends one GET on each, reads the
answer, prints "ready" and holds them idle until stdin closes (or SECONDS pass). With `tls`,
the connections are TLS (certificate not verified: the bench's own).

    bench/idle_clients.py PORT N [SECONDS=60] [tls]
"""
import asyncio
import resource
import ssl
import sys

TLS = None
if len(sys.argv) > 4 and sys.argv[4] == "tls":
    TLS = ssl.create_default_context()
    TLS.check_hostname = False
    TLS.verify_mode = ssl.CERT_NONE


async def one(port: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=TLS)
    writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    await reader.readexactly(length)
    return writer


async def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    hold = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1024), hard))
    writers = []
    for start in range(0, count, 200):  # in batches: no SYN flood
        writers += await asyncio.gather(*(one(port) for _ in range(start, min(count, start + 200))))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), hold)
    except asyncio.TimeoutError:
        pass
    for writer in writers:
        writer.close()


asyncio.run(main())
