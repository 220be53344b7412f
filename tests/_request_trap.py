"""A TCP relay between NATS clients and a server that springs at one client request.

``RequestTrap`` relays every connection to the server's port. It reads what
clients send command by command (``PUB``/``HPUB`` with their payloads, every
other command a line), and once armed, at the first ``PUB`` or ``HPUB`` whose
subject starts with one of the trapped prefixes, it forwards that command whole
and then, before one more byte goes either way, either kills a process
(SIGKILL) or cuts the connection. The server takes the request; the client
never sees its answer: a client that dies, or loses its link, right after the
request left. Connections made after that (the client reconnecting) are relayed
as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading

from _nats import free_port

MAX_COMMAND = 16 << 20  # bytes: larger than any command a test sends


class RequestTrap:
    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.sprung = threading.Event()
        self.sprung_on = b""  # the subject of the request it sprang at
        self._subjects: tuple[bytes, ...] = ()
        self._victim: int | None = None  # a pid to kill; None: cut the connection
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    def arm(self, subjects: tuple[str, ...], victim: int | None = None) -> None:
        """Springs at the next request to a subject starting with one of ``subjects``:
        kills ``victim``, or with None, cuts that client's connection."""
        self._loop.call_soon_threadsafe(self._arm, tuple(s.encode() for s in subjects), victim)

    def _arm(self, subjects: tuple[bytes, ...], victim: int | None) -> None:
        self.sprung.clear()
        self._subjects, self._victim = subjects, victim

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, far_writer}
        held = asyncio.Event()  # set as the trap springs: not one byte more to the client
        # Each side ends the link both ways: a client that dies or a server that closes.
        upstream = asyncio.ensure_future(self._client_to_server(reader, far_writer, held))
        downstream = asyncio.ensure_future(self._server_to_client(far_reader, writer, held))
        try:
            await asyncio.wait([upstream, downstream], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the relay stops: a normal end, not an error for asyncio to report
        finally:
            for task in (upstream, downstream):
                task.cancel()
            for end in (writer, far_writer):
                end.close()
                self._writers.discard(end)

    async def _server_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while (data := await reader.read(65536)) and not held.is_set():
                writer.write(data)
                await writer.drain()

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: asyncio.Event
    ) -> None:
        """Forwards whole commands; returns (ending the link) at EOF or once sprung."""
        pending = b""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                pending += data
                forward, pending, trapped = self._split(pending)
                if trapped is not None:
                    held.set()
                    writer.write(forward)
                    self._spring(trapped)
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()  # the request reaches the server before the cut
                    return
                writer.write(forward)
                await writer.drain()

    def _split(self, pending: bytes) -> tuple[bytes, bytes, bytes | None]:
        """(bytes to forward, bytes kept for later, the trapped subject or None): what
        to forward ends with the trapped command, or with the last whole command."""
        end = 0
        while True:
            line_end = pending.find(b"\r\n", end)
            if line_end < 0:
                break
            words = pending[end:line_end].split()
            command_end = line_end + 2
            if words and words[0].upper() in (b"PUB", b"HPUB"):
                command_end += int(words[-1]) + 2  # the payload and its CRLF
                if command_end > len(pending):
                    assert command_end - end < MAX_COMMAND, words
                    break
                if self._subjects and words[1].startswith(self._subjects):
                    return pending[:command_end], b"", words[1]
            end = command_end
        return pending[:end], pending[end:], None

    def _spring(self, subject: bytes) -> None:
        victim, self._subjects = self._victim, ()
        if victim is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        self.sprung_on = subject
        self.sprung.set()
