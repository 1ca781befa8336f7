"""The time window a step reads of a capture: ``--since``, ``--until``, or the last ``--hours``.

Pure functions. A window is half open, ``[since, until)`` in epoch seconds, either end
open when not given. Times are ISO 8601 (``2026-12-06``, ``2026-12-06T21:00``,
``2026-12-06T21:30:00+01:00``), UTC unless they say otherwise. ``--hours N`` is the N hours
before ``--until`` (or before now), and cannot be given with ``--since``.

Predictions are read from the partitions whose hour meets the window, and only their rows
inside it; labels come after the predictions they belong to, so they are read from the
window's first hour up to now, and only those that name a prediction of the window are kept.
"""

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from iris_core.capture import HOUR_S
from steps.common.errors import InvalidParameter

TIME_FORM = "ISO 8601 such as 2026-12-06T21:00 (UTC unless an offset is given)"


@dataclass(frozen=True)
class Window:
    since: float | None = None
    until: float | None = None

    @property
    def whole(self) -> bool:
        return self.since is None and self.until is None

    def meets_hour(self, hour: int) -> bool:
        """Whether the hour starting at ``hour`` holds any moment of the window."""
        return (self.since is None or hour + HOUR_S > self.since) and (self.until is None or hour < self.until)

    def meets_day(self, day: int) -> bool:
        """Whether the UTC day starting at ``day`` holds any moment of the window."""
        return (self.since is None or day + 24 * HOUR_S > self.since) and (self.until is None or day < self.until)

    def labels(self) -> "Window":
        """Where the labels of this window's predictions may be: from its start on."""
        return Window(self.since, None)

    def describe(self) -> str:
        if self.whole:
            return "all of it"
        since = _text(self.since) if self.since is not None else "the start"
        until = _text(self.until) if self.until is not None else "now"
        return f"from {since} until {until}"

    def params(self) -> dict[str, str]:
        """What a run records of the window, as its ends were resolved."""
        return {"since": _text(self.since) if self.since else "", "until": _text(self.until) if self.until else ""}


WHOLE = Window()  # the whole capture: no --since, --until or --hours


def window_of(since: str | None, until: str | None, hours: str | None, now=time.time) -> Window:
    """The window three options give (empty strings: not given, as MLflow passes them)."""
    since, until, hours = (since or "").strip(), (until or "").strip(), (hours or "").strip()
    if since and hours:
        raise InvalidParameter("give --since or --hours, not both")
    end = parse_time(until, "--until") if until else None
    start = parse_time(since, "--since") if since else None
    if hours:
        try:
            span = float(hours)
        except ValueError:
            span = math.nan
        if not span > 0 or not math.isfinite(span):
            raise InvalidParameter(f"--hours must be a number of hours > 0, got {hours!r}")
        start = (end if end is not None else now()) - span * HOUR_S
    if start is not None and end is not None and not start < end:
        raise InvalidParameter("the window is empty: --since (or --until minus --hours) must come before --until")
    return Window(start, end)


def parse_time(text: str, option: str) -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise InvalidParameter(f"{option} must be {TIME_FORM}, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
