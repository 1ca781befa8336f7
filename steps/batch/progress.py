"""How a long batch job shows that it moves: a bar where a person watches, log lines where none does.

``progress()`` looks at stderr: a terminal gets one line redrawn in place (at most ten times
a second); anything else (a file, a pipe, a CI log) gets a plain log line every
``LOG_EVERY_S`` seconds, so a short job writes none and a long one a line that a log
collector keeps. Both say how far the job is, how fast it goes and how long it has left.
"""

import logging
import os
import sys
import time
from collections.abc import Callable

_logger = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
DRAW_EVERY_S = 0.1
BAR_WIDTH = 24


def describe(fraction: float, detail: str, elapsed: float, eta: bool = True) -> str:
    """'40% (800,000 rows, 6.1 s, about 9 s left)'; ``eta`` is off where the fraction is not the whole job's."""
    fraction = min(max(fraction, 0.0), 1.0)
    words = [detail] if detail else []
    words.append(f"{elapsed:.1f} s")
    if eta and 0 < fraction < 1:
        left = elapsed * (1 - fraction) / fraction
        words.append(f"about {left:.0f} s left" if left >= 1 else "less than 1 s left")
    return f"{fraction:.0%} ({', '.join(words)})"


class LogLines:
    """A log line every ``every`` seconds, none before the first ``every`` seconds have passed."""

    def __init__(self, label: str, every: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.label, self.every, self.clock = label, every, clock
        self.started = self._last = clock()

    def update(self, fraction: float, detail: str = "", eta: bool = True) -> None:
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            _logger.info("%s: %s", self.label, describe(fraction, detail, now - self.started, eta))

    def finish(self) -> None:
        pass


class Bar:
    """One line on a terminal, drawn again in place as the job moves; ended by a newline."""

    def __init__(self, label: str, stream, clock: Callable[[], float] = time.monotonic):
        self.label, self.stream, self.clock = label, stream, clock
        self.started = clock()
        self._drawn_at, self._width, self._last = None, 0, (0.0, "", True)

    def update(self, fraction: float, detail: str = "", eta: bool = True) -> None:
        self._last = (fraction, detail, eta)
        now = self.clock()
        if self._drawn_at is None or now - self._drawn_at >= DRAW_EVERY_S:
            self._draw(now)

    def finish(self) -> None:
        if self._drawn_at is not None:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        fraction, detail, eta = self._last
        filled = round(BAR_WIDTH * min(max(fraction, 0.0), 1.0))
        bar = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}]"
        line = f"{self.label} {bar} {describe(fraction, detail, now - self.started, eta)}"
        line = line[: _columns(self.stream) - 1]
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._drawn_at, self._width = now, len(line)


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


def progress(label: str, stream=None) -> Bar | LogLines:
    """A bar if ``stream`` (stderr) is a terminal, else log lines."""
    stream = sys.stderr if stream is None else stream
    try:
        watched = stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        watched = False
    return Bar(label, stream) if watched else LogLines(label)
