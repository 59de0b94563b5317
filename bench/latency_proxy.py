"""A loopback TCP proxy in front of Azurite that adds a fixed delay to every request, and
counts the requests.

Blob Storage is a network service: from a container in the same region each request pays a
round trip of the order of 10 ms, which Azurite on loopback does not. The proxy holds every
piece of data going from the client to storage for ``delay`` seconds before passing it on
(answers come back at once), so a request's answer arrives ``delay`` later than it would,
and requests sent together overlap as they would over a network. It works at the TCP
level (no HTTP parsing, little CPU: it shares the machine's cores with the job); it counts
a request at each HTTP request line the client sends.

    proxy = LatencyProxy(upstream_port, delay=0.010); proxy.start()   # a thread of its own
    ... connection strings with 127.0.0.1:<proxy.port> ...
    proxy.requests; proxy.stop()
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

#: an HTTP request line at the start of a client's piece of data (Azure's SDK sends a
#: request's headers in one write, so a request line never straddles two pieces)
_REQUEST = re.compile(rb"(?:^|\r\n)(?:GET|PUT|HEAD|DELETE|POST|OPTIONS|PATCH) /[^ \r\n]* HTTP/1\.1\r\n")


class LatencyProxy:
    def __init__(self, upstream_port: int, delay: float = 0.010) -> None:
        self.upstream_port, self.delay = upstream_port, delay
        self.requests = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="latency-proxy")

    def start(self) -> "LatencyProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def connection_string(self, upstream: str) -> str:
        return upstream.replace(f"127.0.0.1:{self.upstream_port}", f"127.0.0.1:{self.port}")

    def _run(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._delayed(reader, up_writer), self._plain(up_reader, writer),
                             return_exceptions=True)

    async def _delayed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to storage: each piece passed on ``delay`` after it arrived, in order."""
        pending: asyncio.Queue = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await pending.get()
                if data is None:
                    writer.close()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        task = asyncio.ensure_future(forward())
        try:
            while data := await reader.read(1 << 16):
                self.requests += len(_REQUEST.findall(data))
                pending.put_nowait((time.monotonic() + self.delay, data))
        finally:
            pending.put_nowait((0.0, None))
            await task

    @staticmethod
    async def _plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
