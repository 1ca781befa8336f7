"""Reading ahead and writing behind in threads, so that Arrow's parsing and writing overlap the checks and the model.

Arrow releases the GIL while it parses a CSV block, decodes Parquet or encodes and writes
a table, so on two cores the next chunk is read and the last one written while this one
is checked and scored. Each side holds at most ``depth`` chunks, which keeps memory
bounded by the chunk; items keep their order, and a failure in a thread is raised where
the job would have met it.
"""

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.1


def read_ahead(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """``items``, produced by a thread up to ``depth`` ahead; closing this generator stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_END, exc))

    thread = threading.Thread(target=produce, name="batch-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, failure = ready.get()
            if item is _END:
                if failure is not None:
                    raise failure
                return
            yield item
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def write_behind(depth: int = 2):
    """A function ``put(write, table)`` that calls ``write(table)`` in a thread, in order, at most ``depth`` behind.

    Leaving the block waits for every write; the first failure of one is raised by the
    next ``put`` or on leaving. After a failure of the job itself, nothing more is written.
    """
    pending: queue.Queue = queue.Queue(maxsize=depth)
    failures: list[BaseException] = []

    def work() -> None:
        while (entry := pending.get()) is not _END:
            write, table = entry
            if not failures:
                try:
                    write(table)
                except BaseException as exc:  # raised in the job's thread
                    failures.append(exc)

    def put(write: Callable[[object], object], table) -> None:
        if failures:
            raise failures[0]
        pending.put((write, table))

    thread = threading.Thread(target=work, name="batch-write-behind", daemon=True)
    thread.start()
    try:
        yield put
    except BaseException:
        failures.append(RuntimeError("the job failed"))  # the queued writes are skipped
        raise
    finally:
        pending.put(_END)
        thread.join()
    if failures:
        raise failures[0]
