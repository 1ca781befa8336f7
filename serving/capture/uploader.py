"""The uploader: a thread that moves the spool's closed files into the store, oldest first, one at a time.

A file leaves the spool only once the store took it whole (``serving.capture.stores``). A
store that fails (down, refusing, timing out) is tried again after a back-off that doubles
from 1 s to 30 s, while files keep piling up in the spool, up to its bound; the proxy's
answers never wait for any of it. ``state`` is ``ok`` after a success (or before any
upload), ``failing`` after a failure, ``stalled`` while one upload has not returned for
longer than its deadline allows. At shutdown ``close`` keeps uploading for a few seconds,
then leaves what is left in the spool for the next start.
"""

import logging
import threading
import time
from collections.abc import Callable

from serving.capture.spool import Ready, Spool
from serving.capture.stores import Store, StoreError
from serving.files.log_writer import STALL_AFTER_S

_logger = logging.getLogger(__name__)

FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 30.0
_WARN_INTERVAL_S = 60.0


def _ignore(*_args) -> None:
    pass


class Uploader:
    def __init__(
        self, spool: Spool, store: Store, on_stored: Callable[[str, int], None] = _ignore, clock=time.monotonic
    ):
        self.spool, self.store = spool, store
        self._on_stored = on_stored  # (kind, rows) for each file the store took
        self._clock = clock
        self.failing = False
        self.last_error: str | None = None
        self.stored_files = 0
        self.failures = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._busy_since: float | None = None
        self._stop = threading.Event()
        self._deadline = float("inf")  # while closing: stop trying by then
        self._thread: threading.Thread | None = None
        self._last_warning = -float("inf")

    @property
    def stalled(self) -> bool:
        since = self._busy_since
        return since is not None and self._clock() - since >= self.store.timeout_s + STALL_AFTER_S

    @property
    def state(self) -> str:
        return "stalled" if self.stalled else "failing" if self.failing else "ok"

    def start(self) -> "Uploader":
        self._thread = threading.Thread(target=self._run, name="capture-uploader", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float) -> None:
        """Upload what the spool holds for at most ``timeout`` seconds (one more try if the store was failing), then stop."""
        self._deadline = self._clock() + timeout
        self._retry_at = min(self._retry_at, self._clock())
        self._stop.set()
        self.spool.wake()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
            if self._thread.is_alive():
                _logger.warning("capture: an upload did not return at shutdown; the spool keeps its files")
            self._thread = None
        left = self.spool.ready_files
        if left:
            _logger.warning(
                "capture: %d files not uploaded at shutdown stay in the spool %s for the next start",
                left,
                self.spool.directory,
            )
        self.store.close()

    def _run(self) -> None:
        while True:
            closing = self._stop.is_set()
            if closing and (not self.spool.ready_files or self._clock() >= self._deadline):
                return
            wait = self._retry_at - self._clock()
            if wait > 0:
                if closing:
                    return  # the store failed again while closing: the spool keeps the rest for the next start
                self._stop.wait(min(wait, 0.5))
                continue
            ready = self.spool.next(0.5)
            if ready is not None:
                self._upload(ready)

    def _upload(self, ready: Ready) -> None:
        if not ready.path.exists():  # deleted by hand: nothing to upload
            self.spool.remove(ready)
            return
        self._busy_since = self._clock()
        try:
            self.store.put(ready.path, ready.relative)
        except StoreError as exc:
            self._failed(str(exc))
            return
        except Exception as exc:  # a bug of ours must not end the thread, and with it the capture
            _logger.exception("capture: uploading %s failed", ready.relative)
            self._failed(f"uploading failed: {type(exc).__name__}")
            return
        finally:
            self._busy_since = None
        self.spool.remove(ready)
        self.stored_files += 1
        self._on_stored(ready.kind, ready.rows)
        if self.failing:
            _logger.info("capture: the store %s takes files again", self.store.location)
        self.failing, self._backoff = False, 0.0

    def _failed(self, message: str) -> None:
        self.failing, self.last_error = True, message
        self.failures += 1
        self._backoff = min(MAX_BACKOFF_S, self._backoff * 2 or FIRST_BACKOFF_S)
        self._retry_at = self._clock() + self._backoff
        now = self._clock()
        if now - self._last_warning >= _WARN_INTERVAL_S:
            self._last_warning = now
            _logger.warning(
                "capture: cannot upload to %s (%s); %d files wait in the spool",
                self.store.location,
                message,
                self.spool.ready_files,
            )
