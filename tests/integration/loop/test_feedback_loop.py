"""The loop closed end to end: serve, take labels back, see accuracy fall, retrain through the gate, recover.

Version 1 is trained on the Iris data and served by a real ``python -m serving`` that
follows ``iris@champion``, with the prediction and feedback logs on. The world changes
under it: a setosa cultivar that looks like versicolor arrives and its true labels are sent
back, and version 1's live accuracy falls in ``/metrics``. Two schedulers then fire
``cycle`` at the same moment, one with the ``mlflow run`` command of docs/feedback.md exactly
as written (in a clone of the project, where the proxy keeps its logs) and one as ``python -m
steps.cycle``, both with the default parameters: one retrains on the base data plus the
labeled production rows, the other stands down. On the gate's held-out rows (production
rows among them) version 2 is below ``min_accuracy`` but version 1 is far below it too, and
version 2 is significantly better on the same rows: the gate promotes it below the floor
(``promoted_below_floor``) and says a person should look (a warning, tags, exit 4, which
``mlflow run`` reports as 1, and the cycle run's ``needs_review``). The proxy follows the
alias, and live accuracy on the cultivar rises, per version, in ``/metrics``.
"""

import subprocess
import sys

import pytest

from iris_core.contract import CYCLE_EXPERIMENT
from iris_core.errors import EXIT_REVIEW
from iris_core.table.iris import IRIS
from tests.helpers.metrics_scrape import sample, scrape
from tests.helpers.proxies import running_proxy
from tests.helpers.readme import fresh_clone, page_command
from tests.helpers.support import wait_until
from tests.helpers.tracking import Registry, build_versions, clean_env, runs
from tests.helpers.traffic import holdout_of, look_alike_cultivar

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
        "accuracy": sample(samples, "proxy_live_accuracy", model="iris", version=version),
        "window_rows": sample(samples, "proxy_live_accuracy_window_rows", model="iris", version=version),
        "labeled": sample(samples, "proxy_live_labeled_rows_total", model="iris", version=version),
        "correct": sample(samples, "proxy_live_correct_rows_total", model="iris", version=version),
    }


def test_labels_fed_back_drop_live_accuracy_one_of_two_cycles_retrains_the_gate_promotes_below_its_floor_the_proxy_follows_and_accuracy_rises(
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

        cultivar = look_alike_cultivar(200, seed=11)
        assert client.serve_and_label(cultivar, "cultivar", per_request=10) == {"1"}
        fallen = live(proxy, "1")
        assert (fallen["labeled"], fallen["window_rows"]) == (220, 220)
        assert fallen["accuracy"] <= 0.1 and fallen["correct"] == before["correct"]

        # two schedulers fire at once; wait until the labels are on disk first, as a scheduler run later would see them
        wait_until(
            lambda: (
                (logs / "feedback.jsonl").exists() and len((logs / "feedback.jsonl").read_text().splitlines()) == 220
            ),
            timeout=30,
            what="220 labels in the feedback log",
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
        retrained = [i for i, (out, _) in enumerate(outputs) if "cycle: retrained: " in out]
        assert len(retrained) == 1, outputs
        [winner] = retrained
        # exit 4 says a person should look; `mlflow run` turns any non-zero exit of its entry point into 1
        codes = [process.returncode for process in processes]
        assert codes[winner] == (1 if winner == 0 else EXIT_REVIEW) and codes[1 - winner] == 0, outputs
        out, err = outputs[winner]
        assert "WARNING steps.evaluate: iris version 2 was promoted below min_accuracy 0.9: champion version 1" in err
        text = "\n".join(out for out, _ in outputs)
        assert "iris version 1: performance_drop (live accuracy 0.09" in text
        assert "iris version 2: gate promoted_below_floor" in text and "@champion -> version 2 (was 1)" in text
        assert "McNemar exact p-value " in text and "<= below_floor_alpha 0.05: significantly better" in text
        decisions = sorted(line for line in text.splitlines() if line.startswith("cycle: "))
        assert len(decisions) == 2
        assert decisions[0].startswith("cycle: retrained: version 1: performance_drop: live accuracy 0.09")
        assert decisions[0].endswith("retrained into version 2, promoted below the gate's floor, a person should look")
        assert (
            decisions[1].startswith("cycle: skipped: version 1: performance_drop") and "not retrained: " in decisions[1]
        )
        assert [int(v.version) for v in registry.search_model_versions("name = 'iris'")] == [2, 1]
        [cycled] = runs(registry, CYCLE_EXPERIMENT, cycle_decision="retrained")
        assert cycled.data.tags["gate_decision"] == "promoted_below_floor" and cycled.data.metrics["needs_review"] == 1
        [stood_down] = runs(registry, CYCLE_EXPERIMENT, cycle_decision="skipped")
        assert stood_down.data.metrics["needs_review"] == 0
        tags = registry.get_model_version("iris", "2").tags
        assert tags["gate_decision"] == "promoted_below_floor" and float(tags["below_floor_p_value"]) <= 0.05
        assert float(tags["gate_champion_accuracy"]) < float(tags["eval_accuracy"]) < 0.9
        evaluation = registry.get_run(tags["evaluation_run_id"])
        assert evaluation.data.metrics["production_accuracy"] > evaluation.data.metrics["champion_production_accuracy"]

        # the proxy follows the alias by itself
        wait_until(lambda: proxy.health()["model"]["version"] == "2", timeout=240, what="the proxy to serve version 2")
        more = look_alike_cultivar(40, seed=12)
        assert client.serve_and_label(more, "after", per_request=10) == {"2"}
        risen, still = live(proxy, "2"), live(proxy, "1")
        assert (risen["labeled"], risen["window_rows"]) == (40, 40)
        assert risen["accuracy"] >= 0.8
        assert still == fallen, "version 1's figures stay as they were"
        health = proxy.health()["feedback"]["live_accuracy"]["versions"]
        assert set(health) == {"1", "2"} and health["2"]["accuracy"] == risen["accuracy"]
