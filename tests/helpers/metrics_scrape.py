"""Prometheus expositions parsed back with prometheus_client's own parser: a proxy's ``GET /metrics``, an app's, or ProxyMetrics'."""

import requests
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def parsed(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition as {(name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of ``GET url`` as {(name, sorted labels): value}, parsed by prometheus_client."""
    response = requests.get(url, timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return parsed(response.text)


async def scrape_app(client) -> dict:
    """Every sample of the in-process app's ``GET /metrics`` (an aiohttp test client)."""
    return parsed(await (await client.get("/metrics")).text())


def samples(metrics) -> dict[tuple[str, tuple], float]:
    """Every sample of a ProxyMetrics' exposition as {(name, sorted labels): value}."""
    return parsed(generate_latest(metrics.registry).decode())


def sample(samples: dict, metric: str, **labels) -> float:
    """The sum of the metric's series that carry these labels (0 when none does).

    Labels not named are summed over: a proxy serving one model has one series per
    ``model``, and what is asserted about it holds whatever the model is called.
    """
    wanted = set(labels.items())
    return sum(value for (name, have), value in samples.items() if name == metric and wanted <= set(have))
