#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay in each direction: a far-away server on
loopback, for benches that need network latency (the kernel here has no netem).

usage: delay_proxy.py DELAY_MS TARGET_PORT LISTEN_PORT...
Every LISTEN_PORT on 127.0.0.1 forwards to 127.0.0.1:TARGET_PORT; each chunk read is written
to the other side DELAY_MS after it arrived, in order. Prints "ready" once listening.
"""
import asyncio
import sys
import time


async def pipe(reader, writer, delay):
    queue = asyncio.Queue()

    async def read():
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()

    await asyncio.gather(read(), write())


async def main():
    delay = float(sys.argv[1]) / 1000
    target = int(sys.argv[2])

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pipe(client_r, server_w, delay),
            pipe(server_r, client_w, delay),
            return_exceptions=True,
        )
        client_w.close()
        server_w.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", int(p)) for p in sys.argv[3:]]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
