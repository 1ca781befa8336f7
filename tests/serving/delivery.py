"""The steady load of the real delivery and shadow tests (their bad versions come from ``bench.misbehaving``).

``Traffic`` is a few client threads asking ``/predict`` of one or more proxies with one
row of each class in turn, bounded in count and time, remembering when each answer came,
its status and its ``X-Model-Version``.
"""

import itertools
import threading
import time
from dataclasses import dataclass

import requests

ROWS = {  # one clear row of each class; a balanced stream of them keeps the class mix even
    "setosa": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    "versicolor": {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5},
    "virginica": {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
}


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
            for _ in range(100_000):
                if self._stop.is_set() or time.monotonic() > self.deadline:
                    return
                url, sent = next(urls), next(classes)
                started = time.monotonic()
                try:
                    response = session.post(f"{url}/predict", json=ROWS[sent], timeout=60)
                    answered = response.json().get("prediction") if response.status_code == 200 else None
                    status, version = response.status_code, response.headers.get("X-Model-Version")
                except requests.RequestException:
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
