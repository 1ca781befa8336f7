"""What a token holder cannot do with ``POST /feedback``: count one row twice, or flush real labels out of the log.

In process, through the real app, as ``test_feedback.py`` (whose helpers these are).
"""

from iris_core.records import MAX_LABEL, read_feedback_log, rotated_files
from serving.feedback.service import KEPT_FOR_S, LabelBudget, label_bytes
from tests.helpers.feedback_app import SETOSA, VIRGINICA, score, send, serve
from tests.helpers.metrics_scrape import scrape_app


def test_a_reused_request_id_does_not_make_a_labeled_row_count_twice_in_live_accuracy(tmp_path):
    async def body(client, router):
        await score(client, [VIRGINICA], request_id="reused-id")
        assert (await send(client, {"request_id": "reused-id", "label": "setosa"}))[1]["counted"] == 1
        await score(client, [VIRGINICA], request_id="reused-id")  # the client sends the same id again
        status, answer = await send(client, {"request_id": "reused-id", "label": "setosa"})
        assert (status, answer["counted"], answer["duplicate"]) == (200, 0, 1)
        samples = await scrape_app(client)
        assert samples[("proxy_live_labeled_rows_total", (("model", "iris"), ("version", "1")))] == 1

    serve(tmp_path, body)


def test_a_reused_request_id_keeps_only_the_labels_of_rows_its_new_answer_has(tmp_path):
    async def body(client, router):
        await score(client, [SETOSA, VIRGINICA], request_id="reused-id")
        labels = [{"request_id": "reused-id", "row": row, "label": "setosa"} for row in (0, 1)]
        assert (await send(client, labels))[1]["counted"] == 2
        await score(client, [SETOSA, SETOSA, SETOSA], request_id="reused-id")
        status, answer = await send(client, [{"request_id": "reused-id", "row": row, "label": 0} for row in (0, 2)])
        assert (status, answer["counted"], answer["duplicate"]) == (200, 1, 1)

    serve(tmp_path, body)


def test_junk_labels_sent_as_fast_as_they_are_taken_cannot_rotate_a_real_label_out_of_the_feedback_log(tmp_path):
    """A log of 2 x 2,000 bytes: without a bound, a few dozen junk labels rotate the real one out."""
    settings = {"log_max_bytes": 2000, "log_backups": 1, "max_rows": 5}

    async def body(client, router):
        real, _ = await score(client, [SETOSA])
        assert (await send(client, {"request_id": real, "label": "setosa"}))[0] == 200
        statuses, retry_after = [], set()
        for attempt in range(200):
            junk = [{"request_id": f"junk-{attempt}-{n}", "label": "virginica"} for n in range(5)]
            response = await client.post("/feedback", json=junk, headers={"Authorization": "Bearer t0ken"})
            statuses.append(response.status)
            if response.status == 429:
                assert (await response.json())["error_code"] == "TOO_MANY_LABELS"
                retry_after.add(int(response.headers["Retry-After"]))
        assert 429 in statuses and set(statuses) == {200, 429}
        assert min(retry_after) > 0
        samples = await scrape_app(client)
        assert samples[("proxy_feedback_requests_total", (("code", "429"),))] == statuses.count(429)

    serve(tmp_path, body, **settings)
    files = rotated_files(tmp_path / "feedback.jsonl")
    kept = [(r["request_id"], r["row"], r["label"]) for path in files for r in read_feedback_log(path).records]
    assert not kept[0][0].startswith("junk"), "the real label was rotated out"
    junk_bytes = sum(label_bytes(*label) for label in kept[1:])
    capacity = settings["max_rows"] * label_bytes("x" * 128, settings["max_rows"], "x" * MAX_LABEL)
    assert junk_bytes <= capacity, "no more junk than one request's worth of the longest labels"


def test_the_label_budget_refills_at_a_days_retention_and_says_how_long_to_wait():
    now = [0.0]
    budget = LabelBudget(rate=10.0, capacity=100.0, clock=lambda: now[0])
    assert budget.take(100) == 0.0
    assert budget.take(30) == 3.0, "30 bytes more need three seconds at 10 bytes a second"
    now[0] = 3.0
    assert budget.take(30) == 0.0
    budget.give_back(1000)
    assert budget.take(101) > 0, "never more than its capacity"


def test_the_default_bound_keeps_a_day_of_labels_and_takes_one_request_at_the_row_limit():
    from serving.config import ServingConfig

    config = ServingConfig(upstream="http://127.0.0.1:1", prediction_log="p.jsonl", feedback_log="f.jsonl")
    budget = LabelBudget.of(config)
    assert budget.rate * KEPT_FOR_S == config.log_max_bytes * (config.log_backups + 1)
    assert budget.capacity >= config.max_rows * label_bytes("x" * 128, 0, "x" * MAX_LABEL)
    assert LabelBudget.of(ServingConfig(upstream="http://127.0.0.1:1", log_max_bytes=0)) is None
