"""Steady client traffic against one or more proxies: what the rollout benchmark measures and the delivery tests check.

``Traffic`` is a few client threads asking ``/predict`` with one clear row of each class in
turn, bounded in count and time, remembering when each answer came, its status, its
``X-Model-Version`` and the class it named. The benchmark reads switch times from it
(``first_answer_after``); the real-process tests of rollouts and shadowing read which
version answered what (``since``, ``latest_version``).
"""

import itertools
import threading
import time
from dataclasses import dataclass

import requests

from iris_core.table.iris import IRIS

ROWS = {  # one clear row of each class; a balanced stream of them keeps the class mix even
    name: dict(zip(IRIS.feature_names, values))
    for name, values in (
        ("setosa", (5.1, 3.5, 1.4, 0.2)),
        ("versicolor", (5.9, 3.0, 4.2, 1.5)),
        ("virginica", (6.7, 3.0, 5.2, 2.3)),
    )
}
MAX_REQUESTS_PER_THREAD = 100_000


@dataclass(frozen=True)
class Answer:
    at: float  # time.time() when it came back
    url: str  # which proxy
    status: int  # 0: no HTTP answer at all
    version: str | None
    latency_s: float
    sent: str  # the class of the row sent
    answered: str | None  # the class the answer named


class Traffic:
    """Client threads posting /predict to the proxies in turn, with rows of each class in turn."""

    def __init__(self, urls: list[str], threads: int = 4, pause: float = 0.02, max_seconds: float = 600):
        self.urls, self.pause = urls, pause
        self.deadline = time.monotonic() + max_seconds
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def _run(self, number: int) -> None:
        urls = itertools.cycle(self.urls[number % len(self.urls) :] + self.urls[: number % len(self.urls)])
        classes = itertools.cycle(list(ROWS)[number % 3 :] + list(ROWS)[: number % 3])
        with requests.Session() as session:
            for _ in range(MAX_REQUESTS_PER_THREAD):
                if self._stop.is_set() or time.monotonic() > self.deadline:
                    return
                url, sent = next(urls), next(classes)
                started = time.monotonic()
                try:
                    response = session.post(f"{url}/predict", json=ROWS[sent], timeout=60)
                    answered = response.json().get("prediction") if response.status_code == 200 else None
                    status, version = response.status_code, response.headers.get("X-Model-Version")
                except (requests.RequestException, ValueError):
                    status, version, answered = 0, None, None
                with self._lock:
                    self.answers.append(
                        Answer(time.time(), url, status, version, time.monotonic() - started, sent, answered)
                    )
                time.sleep(self.pause)

    def since(self, at: float, url: str | None = None, until: float | None = None) -> list[Answer]:
        with self._lock:
            answers = list(self.answers)
        return [a for a in answers if a.at >= at and (until is None or a.at <= until) and url in (None, a.url)]

    def latest_version(self, url: str) -> str | None:
        with self._lock:
            mine = [a for a in self.answers if a.url == url and a.status == 200]
        return mine[-1].version if mine else None

    def failed(self) -> int:
        """Answers that were not a 200, connection failures included."""
        with self._lock:
            return sum(1 for a in self.answers if a.status != 200)

    def first_answer_after(self, version: str, since: float, timeout: float) -> float:
        """Seconds from ``since`` (a time.time()) to the first successful answer by ``version`` after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [a.at for a in self.since(since) if a.status == 200 and a.version == version]
            if later:
                return later[0] - since
            time.sleep(0.005)
        raise TimeoutError(f"version {version} did not answer within {timeout:g} s")
