"""Steady client traffic against a running proxy, from a few threads, bounded in count and time: what a rollout or a fault is watched under."""

import threading
import time


class SteadyLoad:
    """A few threads posting /predict (or ``body`` to ``path``) on keep-alive connections, bounded in count and time.

    With ``keep``, each answer's version and JSON body are kept too (``bodies``).
    """

    def __init__(
        self,
        stack,
        threads: int = 4,
        max_seconds: float = 300,
        max_requests: int = 20_000,
        pause: float = 0.02,
        path: str = "/predict",
        body: dict | None = None,
        keep: bool = False,
        headers: dict | None = None,
    ):
        self.stack, self.pause = stack, pause
        self.path, self.keep, self.headers = path, keep, headers or {}
        self.body = body or {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        self.bodies: list[tuple[str | None, object]] = []
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.results: list[tuple[int, str | None]] = []  # (status, X-Model-Version) in completion order
        self.answers: list[tuple[int, float, dict]] = []  # (status, seconds it took, headers), the same order
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        import requests

        with requests.Session() as session:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > self.deadline:
                    return
                started = time.monotonic()
                headers = {}
                try:
                    response = session.post(
                        f"{self.stack.url}{self.path}", json=self.body, headers=self.headers, timeout=60
                    )
                    outcome = (response.status_code, response.headers.get("X-Model-Version"))
                    headers = dict(response.headers)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                    elif self.keep:
                        with self._lock:
                            self.bodies.append((outcome[1], response.json()))
                except Exception as exc:  # a reset or timeout is a failed request too
                    outcome = (0, None)
                    self.failures.append(repr(exc))
                with self._lock:
                    self.results.append(outcome)
                    self.answers.append((outcome[0], time.monotonic() - started, headers))
                time.sleep(self.pause)

    def versions(self) -> list[str | None]:
        with self._lock:
            return [version for _, version in self.results]

    def latest(self) -> str | None:
        versions = self.versions()
        return versions[-1] if versions else None
