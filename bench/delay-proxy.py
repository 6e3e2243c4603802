#!/usr/bin/env python3
"""A TCP proxy that shapes a link in user space: every byte is delivered DELAY_MS after it
arrived, in both directions (so a round trip gains 2 x DELAY_MS), and each direction of each
connection is capped at RATE_MBIT. Used by bench/ci-bench.sh where `tc qdisc ... netem` is
unavailable (no sch_netem in the kernel, or not root).

    delay-proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT [DELAY_MS=10] [RATE_MBIT=1000]
"""
import asyncio
import sys
import time

listen_port, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
delay = (float(sys.argv[4]) if len(sys.argv) > 4 else 10.0) / 1000.0
rate = (float(sys.argv[5]) if len(sys.argv) > 5 else 1000.0) * 1e6 / 8  # bytes per second


async def pump(reader, writer):
    queue = asyncio.Queue()

    async def deliver():
        sent_until = time.monotonic()
        while True:
            due, data = await queue.get()
            if data is None:
                break
            # Propagation delay, then serialization at `rate`.
            start = max(due, sent_until)
            sent_until = start + len(data) / rate
            wait = sent_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except OSError:
            pass

    task = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    finally:
        queue.put_nowait((0, None))
        await task


async def handle(cr, cw):
    try:
        sr, sw = await asyncio.open_connection(host, port)
    except OSError:
        cw.close()
        return
    await asyncio.gather(pump(cr, sw), pump(sr, cw), return_exceptions=True)
    for w in (cw, sw):
        w.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


asyncio.run(main())
