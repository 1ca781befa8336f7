"""``POST /feedback`` on a real ``python -m serving`` in front of a real upstream (version 2 of the session registry)."""

import pytest
import requests

from iris_core.records import read_feedback_log, read_log
from tests.helpers.iris import FEATURES
from tests.helpers.metrics_scrape import sample as value
from tests.helpers.metrics_scrape import scrape
from tests.helpers.proxies import refused_start, running_proxy, shared_upstream_proxy
from tests.helpers.support import small_tmpfs, wait_until

pytestmark = pytest.mark.slow

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [7.7, 2.6, 6.9, 2.3]
AUTH = {"Authorization": "Bearer fe3dback-token"}


@pytest.fixture(scope="module")
def feedback_proxy(trained_registry, upstream_url, tmp_path_factory):
    """A proxy with the token from the environment and both logs on, in front of the shared upstream."""
    workdir = tmp_path_factory.mktemp("feedback-proxy")
    with shared_upstream_proxy(
        trained_registry,
        workdir,
        upstream_url,
        *("--prediction-log", "logs/predictions.jsonl", "--feedback-log", "logs/feedback.jsonl"),
        token="fe3dback-token",
    ) as proxy:
        proxy.logs = workdir / "logs"
        yield proxy


def score(proxy, rows, request_id: str) -> list[str]:
    response = proxy.post(
        "/invocations",
        json={"dataframe_split": {"columns": list(FEATURES), "data": rows}},
        headers={**AUTH, "X-Request-Id": request_id},
    )
    assert response.status_code == 200 and response.headers["X-Request-Id"] == request_id
    return [p["prediction"] for p in response.json()["predictions"]]


def feedback(proxy, body, headers=AUTH) -> requests.Response:
    return proxy.post("/feedback", json=body, headers=headers)


def test_labels_for_a_scored_request_count_for_its_version_and_land_in_the_log_beside_its_predictions(feedback_proxy):
    assert score(feedback_proxy, [SETOSA, VIRGINICA], "fb-two-rows") == ["setosa", "virginica"]
    before = scrape(feedback_proxy.url + "/metrics")
    response = feedback(
        feedback_proxy,
        [
            {"request_id": "fb-two-rows", "row": 0, "label": "setosa"},
            {"request_id": "fb-two-rows", "row": 1, "label": 1},
        ],
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "counted": 2, "duplicate": 0, "not_remembered": 0}
    after = scrape(feedback_proxy.url + "/metrics")
    for metric, expected in (("proxy_live_labeled_rows_total", 2), ("proxy_live_correct_rows_total", 1)):
        assert value(after, metric, version="2") - value(before, metric, version="2") == expected
    assert 0 < value(after, "proxy_live_accuracy", version="2") < 1
    assert feedback_proxy.health()["feedback"]["live_accuracy"]["versions"]["2"]["labeled_rows"] >= 2

    def logged(name, parse):
        path = feedback_proxy.logs / name
        return [r for r in parse(path).records if r["request_id"] == "fb-two-rows"] if path.exists() else []

    labels = wait_until(lambda: logged("feedback.jsonl", read_feedback_log), timeout=30, what="the labels logged")
    predictions = wait_until(lambda: logged("predictions.jsonl", read_log), timeout=30, what="the rows logged")
    joined = {(p["row"], p["prediction"]): l["label"] for p in predictions for l in labels if l["row"] == p["row"]}
    assert joined == {(0, "setosa"): "setosa", (1, "virginica"): "versicolor"}


def test_a_label_for_an_unknown_request_is_logged_counted_as_not_remembered_and_not_scored(feedback_proxy):
    before = scrape(feedback_proxy.url + "/metrics")
    response = feedback(feedback_proxy, {"request_id": "never-answered-here", "label": "virginica"})
    assert response.status_code == 200 and response.json()["not_remembered"] == 1
    after = scrape(feedback_proxy.url + "/metrics")
    delta = value(after, "proxy_feedback_labels_total", outcome="not_remembered") - value(
        before, "proxy_feedback_labels_total", outcome="not_remembered"
    )
    assert delta == 1
    assert value(after, "proxy_live_labeled_rows_total", version="2") == value(
        before, "proxy_live_labeled_rows_total", version="2"
    )


@pytest.mark.parametrize(
    "body, headers, status, code",
    [
        (b'{"request_id": "x", "label": "rose"}', {"Content-Type": "application/json"}, 400, "INVALID_FEEDBACK"),
        (b"{not json", {"Content-Type": "application/json"}, 400, "MALFORMED_REQUEST"),
        (b"request_id=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
def test_a_malformed_feedback_request_gets_a_short_json_4xx_without_echoing_it(
    feedback_proxy, body, headers, status, code
):
    response = feedback_proxy.post("/feedback", data=body, headers={**AUTH, **headers})
    assert (response.status_code, response.json()["error_code"]) == (status, code)
    assert "rose" not in response.text and "not json" not in response.text and len(response.text) < 400


def test_feedback_without_the_token_is_refused(feedback_proxy):
    response = feedback(feedback_proxy, {"request_id": "x", "label": 0}, headers={})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_a_feedback_log_that_cannot_be_written_refuses_labels_and_every_scoring_request_is_still_answered(
    trained_registry, upstream_url, tmp_path
):
    (tmp_path / "not-a-file").mkdir()
    with running_proxy(
        trained_registry,
        tmp_path,
        "--upstream",
        upstream_url,
        "--prediction-log",
        "predictions.jsonl",
        "--feedback-log",
        "not-a-file",
    ) as proxy:
        wait_until(lambda: proxy.health()["feedback"]["log"]["state"] == "failing", timeout=30, what="failing log")
        for i in range(5):
            assert proxy.predict(headers={"X-Request-Id": f"scored-{i}"}).status_code == 200
        response = proxy.post("/feedback", json={"request_id": "scored-0", "label": "setosa"})
        assert response.status_code == 503 and response.json()["error_code"] == "FEEDBACK_LOG_UNAVAILABLE"
        assert proxy.health()["status"] == "healthy"
        assert value(scrape(proxy.url + "/metrics"), "proxy_feedback_requests_total", code="503") == 1
        assert "Cannot write the feedback log" in proxy.output()


def test_on_a_full_disk_every_label_answered_200_is_in_the_file_whole_and_the_counters_equal_the_files(
    trained_registry, upstream_url, tmp_path
):
    """Both logs on a 64 KiB tmpfs, whose last 16 KiB a file holds until the test frees them."""
    with small_tmpfs(tmp_path / "disk") as disk:
        (disk / "filler").write_bytes(b"x" * 16 * 1024)
        predictions, labels = disk / "predictions.jsonl", disk / "feedback.jsonl"
        with running_proxy(
            trained_registry,
            tmp_path / "work",
            "--upstream",
            upstream_url,
            "--prediction-log",
            str(predictions),
            "--feedback-log",
            str(labels),
        ) as proxy:
            kept, refused = [], 0
            for i in range(1000):
                score(proxy, [SETOSA, VIRGINICA], f"full-{i}")  # scoring goes on whatever the logs do
                answer = feedback(proxy, {"request_id": f"full-{i}", "row": 1, "label": "virginica"}, headers={})
                assert answer.status_code in (200, 503), answer.text
                if answer.status_code == 200:
                    kept.append(f"full-{i}")
                else:
                    assert answer.json()["error_code"] == "FEEDBACK_LOG_UNAVAILABLE" and answer.headers["Retry-After"]
                    refused += 1
                if refused == 5:
                    break
            assert refused == 5, "the disk never filled up"

            def files_and_counters_agree() -> bool:
                samples = scrape(proxy.url + "/metrics")
                return value(samples, "proxy_feedback_log_written_rows_total") == len(
                    read_feedback_log(labels).records
                ) and value(samples, "proxy_prediction_log_written_rows_total") == len(read_log(predictions).records)

            wait_until(files_and_counters_agree, timeout=30, what="the written counters to equal the files")
            for path in (predictions, labels):
                assert path.read_bytes().endswith(b"\n"), f"{path.name} ends in a partial line"
            assert read_log(predictions).skipped == 0 and read_feedback_log(labels).skipped == 0
            assert [r["request_id"] for r in read_feedback_log(labels).records] == kept, "a label answered 200 is lost"
            (disk / "filler").unlink()  # space again
            wait_until(
                lambda: proxy.health()["feedback"]["log"]["state"] == "ok",
                timeout=30,
                what="the feedback log to recover",
            )
            score(proxy, [SETOSA], "after-the-disk-was-freed")
            answer = feedback(proxy, {"request_id": "after-the-disk-was-freed", "label": "setosa"}, headers={})
            assert answer.status_code == 200
            wait_until(files_and_counters_agree, timeout=30, what="the written counters to equal the files")
        assert read_feedback_log(labels).skipped == 0 and read_log(predictions).skipped == 0
        assert read_feedback_log(labels).records[-1]["request_id"] == "after-the-disk-was-freed"


def test_a_feedback_log_without_the_prediction_log_is_refused_at_start_in_one_line(trained_registry, tmp_path):
    result = refused_start(
        trained_registry, tmp_path, "--upstream", "http://127.0.0.1:1", "--feedback-log", "feedback.jsonl"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --feedback-log needs --prediction-log: labels are joined with the logged predictions they belong to"
    )
