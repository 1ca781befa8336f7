"""The loop closed end to end: serve, take labels back, see accuracy fall, retrain through the gate, recover.

Version 1 is trained on the Iris data and served by a real ``python -m serving`` that
follows ``iris@champion``, with the prediction and feedback logs on. Traffic from a new
cultivar (wide sepals, versicolor-sized petals, truly setosa) arrives and its true labels
are sent back: version 1's live accuracy falls in ``/metrics``. Two schedulers then fire
``cycle`` at the same moment, one with the ``mlflow run`` command of docs/feedback.md exactly
as written (in a clone of the project, where the proxy keeps its logs) and one as ``python -m
steps.cycle``: one retrains on the base data plus the labeled production rows, the gate
promotes version 2 because it beats version 1 on the held-out rows (production rows
among them), the other stands down. The proxy follows the alias, and live accuracy on the
new cultivar recovers, per version, in ``/metrics``.
"""

import subprocess
import sys

import pytest

from iris_core.contract import CYCLE_EXPERIMENT
from iris_core.table.iris import IRIS
from tests.conftest import Registry, build_versions, clean_env
from tests.loop.test_cycle import holdout_of, runs
from tests.monitoring.traffic import new_cultivar
from tests.readme import fresh_clone, page_command
from tests.serving.conftest import running_proxy
from tests.serving.test_monitoring import sample, scrape
from tests.support import wait_until

FEATURES, LABEL = IRIS.feature_names, IRIS.label

pytestmark = pytest.mark.slow

TOKEN = "l00p-token"
PAGE_CYCLE = page_command("docs/feedback.md", "The loop, end to end", "-e cycle")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Client:
    """A client of the proxy that keeps the request ids of its answers and sends the true labels back."""

    def __init__(self, proxy):
        self.proxy = proxy

    def score(self, frame, request_id: str) -> tuple[str, list[str]]:
        response = self.proxy.post(
            "/invocations",
            json={"dataframe_split": {"columns": list(FEATURES), "data": frame[list(FEATURES)].values.tolist()}},
            headers={**AUTH, "X-Request-Id": request_id},
        )
        assert response.status_code == 200, response.text
        return response.headers["X-Model-Version"], [p["prediction"] for p in response.json()["predictions"]]

    def label(self, frame, request_id: str) -> None:
        items = [{"request_id": request_id, "row": i, "label": species} for i, species in enumerate(frame[LABEL])]
        response = self.proxy.post("/feedback", json=items, headers=AUTH)
        assert response.status_code == 200 and response.json()["counted"] == len(items), response.text

    def serve_and_label(self, frame, prefix: str, per_request: int) -> set[str]:
        versions = set()
        for start in range(0, len(frame), per_request):
            part = frame.iloc[start : start + per_request]
            version, _ = self.score(part, f"{prefix}-{start}")
            self.label(part, f"{prefix}-{start}")
            versions.add(version)
        return versions


def live(proxy, version: str) -> dict[str, float]:
    samples = scrape(proxy.url + "/metrics")
    return {
        "accuracy": sample(samples, "proxy_live_accuracy", version=version),
        "window_rows": sample(samples, "proxy_live_accuracy_window_rows", version=version),
        "labeled": sample(samples, "proxy_live_labeled_rows_total", version=version),
        "correct": sample(samples, "proxy_live_correct_rows_total", version=version),
    }


def test_labels_fed_back_drop_live_accuracy_one_of_two_cycles_retrains_the_proxy_follows_and_accuracy_recovers(
    tmp_path, tracking_store, monkeypatch
):
    build_versions([{}])  # version 1, champion: the classic Iris data only
    registry = Registry(uri=tracking_store).client()
    base = holdout_of(Registry(uri=tracking_store), "1").head(20)
    monkeypatch.setenv("SERVING_API_TOKEN", TOKEN)
    clone = fresh_clone(tmp_path / "proxy")  # the proxy's logs/ are the page's command's logs/
    logs = clone / "logs"
    with running_proxy(
        tmp_path,
        tmp_path / "proxy",
        "--poll-interval",
        "1",
        "--prediction-log",
        "logs/predictions.jsonl",
        "--feedback-log",
        "logs/feedback.jsonl",
    ) as proxy:
        client = Client(proxy)
        assert client.serve_and_label(base, "base", per_request=1) == {"1"}
        before = live(proxy, "1")
        assert before["labeled"] == 20 and before["accuracy"] >= 0.9

        cultivar = new_cultivar(60, seed=11)
        assert client.serve_and_label(cultivar, "cultivar", per_request=10) == {"1"}
        fallen = live(proxy, "1")
        assert (fallen["labeled"], fallen["window_rows"]) == (80, 80)
        assert fallen["accuracy"] <= 0.3 and fallen["correct"] == before["correct"]

        # two schedulers fire at once; wait until the labels are on disk first, as a scheduler run later would see them
        wait_until(
            lambda: (
                (logs / "feedback.jsonl").exists() and len((logs / "feedback.jsonl").read_text().splitlines()) == 80
            ),
            timeout=30,
            what="80 labels in the feedback log",
        )
        launched = [
            ["bash", "-c", PAGE_CYCLE],
            [sys.executable, "-m", "steps.cycle", "--predictions", "logs/predictions.jsonl"]
            + ["--feedback", "logs/feedback.jsonl"],
        ]
        registry.create_experiment(CYCLE_EXPERIMENT)  # neither scheduler has to race to create it
        processes = [
            subprocess.Popen(
                command, cwd=clone, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for command in launched
        ]
        outputs = [process.communicate(timeout=600) for process in processes]
        for process, (out, err) in zip(processes, outputs):
            assert process.returncode == 0, (out, [line for line in err.splitlines() if "rror" in line][-10:])
        text = "\n".join(out for out, _ in outputs)
        assert "iris version 1: performance_drop (live accuracy 0.2" in text
        assert "iris version 2: gate passed" in text and "@champion -> version 2 (was 1)" in text
        decisions = sorted(line for line in text.splitlines() if line.startswith("cycle: "))
        assert len(decisions) == 2
        assert decisions[0].startswith("cycle: retrained: version 1: performance_drop: live accuracy 0.2")
        assert decisions[0].endswith("retrained into version 2, promoted")
        assert (
            decisions[1].startswith("cycle: skipped: version 1: performance_drop") and "not retrained: " in decisions[1]
        )
        assert [int(v.version) for v in registry.search_model_versions("name = 'iris'")] == [2, 1]
        assert len(runs(registry, CYCLE_EXPERIMENT, cycle_decision="retrained")) == 1
        assert len(runs(registry, CYCLE_EXPERIMENT, cycle_decision="skipped")) == 1
        evaluation = registry.get_run(registry.get_model_version("iris", "2").tags["evaluation_run_id"])
        assert evaluation.data.metrics["production_accuracy"] > evaluation.data.metrics["champion_production_accuracy"]

        # the proxy follows the alias by itself
        wait_until(lambda: proxy.health()["model"]["version"] == "2", timeout=240, what="the proxy to serve version 2")
        more = new_cultivar(40, seed=12)
        assert client.serve_and_label(more, "after", per_request=10) == {"2"}
        recovered, still = live(proxy, "2"), live(proxy, "1")
        assert (recovered["labeled"], recovered["window_rows"]) == (40, 40)
        assert recovered["accuracy"] >= 0.95
        assert still == fallen, "version 1's figures stay as they were"
        health = proxy.health()["feedback"]["live_accuracy"]["versions"]
        assert set(health) == {"1", "2"} and health["2"]["accuracy"] == recovered["accuracy"]
