"""Render templates that are not plain in child processes, bounded from outside.

A template that loops, calls or multiplies is a small program: it may burn CPU in a
single C call, or grow memory faster than any check inside Python can see. Such
templates render in a pool of child processes (`python -m levqor.workflows.sandbox`):

- each child has an address-space limit (`memory_mb` above what it needs at rest), so a
  memory bomb ends in that child's MemoryError, not in the server's;
- the parent waits at most `timeout_s`, then kills the child and starts another;
- the parent only waits (in a thread, the event loop never blocks), so the API and the
  other jobs of the process go on meanwhile;
- one user holds at most `size - 1` children at once (1 when there is one), so one
  tenant's bombs cannot make everyone else's templates wait for all of them.

Frames on the pipes are a 4-byte big-endian length and an orjson document.
"""

from __future__ import annotations

import asyncio
import os
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import orjson

from levqor import jsonvalues
from levqor.workflows import templates

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
KILL_GRACE_S = 0.25
# The child starts afresh after a MemoryError: nothing it half-built lingers.
OUT_OF_MEMORY = {"error": "template rendering ran out of memory", "restart": True}


class SandboxPool:
    """Children rendering one template tree each at a time; started on first use."""

    def __init__(self, *, size: int = 2, memory_mb: int = 256, timeout_s: float = 10) -> None:
        self.size = max(1, size)
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.per_user = max(1, self.size - 1)
        self._idle: list[_Child] = []
        self._children: list[_Child] = []
        self._held: Counter[str] = Counter()
        self._changed: asyncio.Condition | None = None
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="levqor-sandbox")
        # Children die with the pool, even one nobody closed (a test's worker).
        self._finalizer = weakref.finalize(self, _shutdown, self._children, self._threads)

    async def render(
        self, value: Any, context: dict[str, Any], *, user_id: str, timeout_s: float
    ) -> Any:
        """`templates.render(value, context)` in a child; TemplateFailed on any failure,
        including running out of time or memory."""
        timeout_s = min(timeout_s, self.timeout_s)
        request = orjson.dumps(
            jsonvalues.storable({"value": value, "context": context, "timeout_s": timeout_s})
        )
        child = await self._acquire(user_id)
        try:
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self._threads, child.call, request, timeout_s)
        finally:
            await self._release(user_id, child)
        if "error" in answer:
            raise templates.TemplateFailed(answer["error"])
        return answer["value"]

    async def _acquire(self, user_id: str) -> _Child:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self._room_for(user_id))
            self._held[user_id] += 1
            if self._idle:
                return self._idle.pop()
            child = _Child(self.memory_mb)
            self._children.append(child)
            return child

    def _room_for(self, user_id: str) -> bool:
        busy = sum(self._held.values())
        return self._held[user_id] < self.per_user and busy < self.size

    async def _release(self, user_id: str, child: _Child) -> None:
        changed = self._condition()
        async with changed:
            self._held[user_id] -= 1
            if self._held[user_id] <= 0:
                del self._held[user_id]
            if child.alive:
                self._idle.append(child)
            else:
                self._children.remove(child)
            changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def close(self) -> None:
        self._finalizer()


def _shutdown(children: list[_Child], threads: ThreadPoolExecutor) -> None:
    for child in children:
        child.kill()
    threads.shutdown(wait=False, cancel_futures=True)


class _Child:
    def __init__(self, memory_mb: int) -> None:
        self.process = subprocess.Popen(  # noqa: S603 (our own module, no user input)
            [sys.executable, "-m", "levqor.workflows.sandbox", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self.lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, request: bytes, timeout_s: float) -> dict[str, Any]:
        """Send one render and wait for its answer; kills the child past `timeout_s` and
        a grace (the child's own deadline, checked at each loop iteration, answers first
        with a clearer message)."""
        with self.lock:
            deadline = time.monotonic() + timeout_s * 1.1 + KILL_GRACE_S
            try:
                assert self.process.stdin is not None
                assert self.process.stdout is not None
                _write_frame(self.process.stdin, request)
                answer = _read_frame(self.process.stdout, deadline)
            except TimeoutError:
                self.kill()
                return {"error": f"template refused: rendering took longer than {timeout_s:g} s"}
            except (OSError, EOFError, ValueError):
                self.kill()
                return {"error": "template rendering failed: the sandbox process died"}
            result: dict[str, Any] = orjson.loads(answer)
            if result.pop("restart", False):
                self.kill()
            return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def _write_frame(pipe: IO[bytes], payload: bytes) -> None:
    pipe.write(HEADER.pack(len(payload)) + payload)
    pipe.flush()


def _read_exactly(pipe: IO[bytes], size: int, deadline: float | None) -> bytes:
    data = bytearray()
    fd = pipe.fileno()
    while len(data) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _read_frame(pipe: IO[bytes], deadline: float | None = None) -> bytes:
    (size,) = HEADER.unpack(_read_exactly(pipe, HEADER.size, deadline))
    if size > MAX_FRAME:
        raise ValueError("frame too large")
    return _read_exactly(pipe, size, deadline)


# ---- the child ---------------------------------------------------------------------


def _limit_memory(memory_mb: int) -> None:
    """Cap the address space at what the child uses now plus `memory_mb`."""
    import resource

    try:
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the budget alone
        in_use = 0
    limit = in_use + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        timeout_s = float(request["timeout_s"])
        value = templates.render(request["value"], request["context"], timeout_s=timeout_s)
        return {"value": jsonvalues.storable(value)}
    except templates.TemplateFailed as exc:
        return {"error": exc.detail}
    except MemoryError:
        return OUT_OF_MEMORY


def serve(memory_mb: int) -> None:
    """The child's loop: one request in, one answer out, until the parent goes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    _limit_memory(memory_mb)
    while True:
        try:
            request = orjson.loads(_read_frame(stdin))
        except EOFError:
            return
        try:
            answer = orjson.dumps(_answer(request))
        except MemoryError:
            answer = orjson.dumps(OUT_OF_MEMORY)
        _write_frame(stdout, answer)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
