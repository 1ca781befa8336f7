"""``POST /feedback`` and live accuracy, in process: the real app and handlers in front of a rule-based fake model.

What needs a real model server and process (a real upstream, the token from the
environment, a log on disk that cannot be written) is in ``test_feedback_proxy.py``.
"""

import asyncio

import orjson
import pytest

from iris_core.records import read_feedback_log
from serving.config import ServingConfig
from serving.errors import ConfigError
from serving.feedback.answers import AnswerMemory, LiveAccuracy, Outcome, count, judge
from serving.feedback.labels import parse_feedback
from serving.protocols.scoring import ValidationError
from tests.helpers.apps import TOKEN
from tests.helpers.fakes import IRIS_FACTS
from tests.helpers.feedback_app import SETOSA, VERSICOLOR, VIRGINICA, RuleModel, score, send, serve
from tests.helpers.iris import CLASSES
from tests.helpers.metrics_scrape import scrape_app
from tests.helpers.support import wait_until


def parse(body, max_items: int = 100):
    return parse_feedback("application/json", orjson.dumps(body), max_items)


# -- parsing ---------------------------------------------------------------------------------


def test_a_label_is_a_class_name_or_its_index_of_the_answering_version_and_row_may_be_left_out():
    memory = AnswerMemory(100)
    for request_id in "abc":
        memory.remember(request_id, "1", bytes([0, 0, 0]), IRIS_FACTS)
    labels = parse([{"request_id": "a", "row": 2, "label": "virginica"}, {"request_id": "b", "row": 0, "label": 0}])
    assert [(x.request_id, x.row, x.label) for x in labels] == [("a", 2, "virginica"), ("b", 0, "0")]
    judged = judge(labels + parse({"request_id": "c", "row": 1, "label": 1}), memory)
    assert [item.class_name for item in judged] == ["virginica", "setosa", "versicolor"]


@pytest.mark.parametrize("label", ["rose", 3, "4"])
def test_a_label_that_names_no_class_of_the_version_that_answered_is_refused_without_echoing_it(label):
    memory = AnswerMemory(100)
    memory.remember("a", "1", bytes([0]), IRIS_FACTS)
    with pytest.raises(ValidationError) as caught:
        judge(parse({"request_id": "a", "label": label}), memory)
    assert (caught.value.status, caught.value.error_code) == (400, "INVALID_FEEDBACK")
    assert caught.value.message.startswith("the label: the label is not a class of version 1")
    assert "rose" not in caught.value.message


@pytest.mark.parametrize(
    "body, message",
    [
        ({"request_id": "a", "label": True}, "the label: label must be a class"),
        ({"request_id": "a", "label": 1.5}, "the label: label must be a class"),
        ({"request_id": "a", "label": ""}, "the label: label must be a class"),
        ({"request_id": "a", "label": "r" * 256}, "the label: label must be a class"),
        ({"request_id": "a"}, "the label: label is missing"),
        ({"request_id": "has space", "label": 0}, "the label: request_id must be the X-Request-Id"),
        ({"request_id": "x" * 129, "label": 0}, "the label: request_id must be the X-Request-Id"),
        ({"label": 0}, "the label: request_id must be"),
        ({"request_id": "a", "row": -1, "label": 0}, "the label: row must be"),
        ({"request_id": "a", "row": 1.0, "label": 0}, "the label: row must be"),
        ({"request_id": "a", "label": 0, "secret": 1}, "the label: unknown field 'secret'"),
        ([{"request_id": "a", "label": 0}, "setosa"], "item 1 must be an object"),
        (
            [{"request_id": "a", "label": 0}, {"request_id": "a", "row": 0, "label": 1}],
            "item 1: labels the same row as item 0",
        ),
        ([], "the array holds no labels"),
        ("setosa", "the body must be a JSON object"),
    ],
)
def test_a_bad_item_is_refused_with_a_400_naming_it_and_never_echoing_its_value(body, message):
    with pytest.raises(ValidationError) as caught:
        parse(body)
    assert (caught.value.status, caught.value.error_code) == (400, "INVALID_FEEDBACK")
    assert caught.value.message.startswith(message), caught.value.message
    assert "rose" not in caught.value.message and "has space" not in caught.value.message


def test_too_many_items_malformed_json_and_other_media_types_are_refused():
    with pytest.raises(ValidationError) as caught:
        parse([{"request_id": str(i), "label": 0} for i in range(4)], max_items=3)
    assert (caught.value.status, caught.value.error_code) == (413, "TOO_MANY_ITEMS")
    with pytest.raises(ValidationError) as caught:
        parse_feedback("application/json", b'{"request_id": "a", "label": NaN}', 10)
    assert caught.value.error_code == "MALFORMED_REQUEST"
    with pytest.raises(ValidationError) as caught:
        parse_feedback("text/csv", b"request_id,label\na,0\n", 10)
    assert caught.value.status == 415


# -- the answer memory and live accuracy -----------------------------------------------------


def test_the_memory_forgets_the_oldest_requests_past_its_row_bound():
    memory = AnswerMemory(max_rows=5)
    memory.remember("a", "1", bytes([0, 1]))
    memory.remember("b", "1", bytes([2, 2]))
    memory.remember("c", "2", bytes([1, 1]))
    assert memory.recall("a") is None and memory.recall("b") and memory.recall("c")
    assert (len(memory), memory.rows) == (2, 4)
    memory.remember("huge", "2", bytes(6))  # larger than the whole memory: not kept, nothing forgotten
    assert (len(memory), memory.rows) == (2, 4)


def test_labels_count_per_version_first_label_wins_and_forgotten_requests_are_counted_apart():
    memory, accuracy = AnswerMemory(100), LiveAccuracy(window=3)
    memory.remember("r1", "1", bytes([0, 1, 2]), IRIS_FACTS)
    memory.remember("r2", "2", bytes([2]), IRIS_FACTS)
    labels = parse(
        [
            {"request_id": "r1", "row": 0, "label": "setosa"},
            {"request_id": "r1", "row": 1, "label": "virginica"},
            {"request_id": "r2", "label": "virginica"},
            {"request_id": "gone", "label": "setosa"},
        ]
    )
    assert count(judge(labels, memory), accuracy) == {
        Outcome.COUNTED: 3,
        Outcome.DUPLICATE: 0,
        Outcome.NOT_REMEMBERED: 1,
    }
    again = count(judge(parse({"request_id": "r1", "row": 1, "label": "versicolor"}), memory), accuracy)
    assert again[Outcome.DUPLICATE] == 1
    v1, v2 = accuracy.versions["1"], accuracy.versions["2"]
    assert (v1.labeled, v1.correct, v1.window_accuracy) == (2, 1, 0.5)
    assert (v2.labeled, v2.correct, v2.window_accuracy) == (1, 1, 1.0)


def test_live_accuracy_covers_the_latest_window_rows_while_the_counts_cover_everything():
    accuracy = LiveAccuracy(window=4)
    for correct in [True] * 10 + [False] * 3:
        accuracy.count("1", correct)
    tally = accuracy.versions["1"]
    assert (tally.labeled, tally.correct, tally.window_rows, tally.window_correct) == (13, 10, 4, 1)
    assert tally.window_accuracy == 0.25


def test_a_row_the_remembered_request_lacks_refuses_the_whole_list_and_counts_nothing():
    memory, accuracy = AnswerMemory(100), LiveAccuracy(window=10)
    memory.remember("multi", "1", bytes([0, 1]), IRIS_FACTS)
    memory.remember("one", "1", bytes([0]), IRIS_FACTS)
    for body, message in [
        (
            [{"request_id": "one", "label": 0}, {"request_id": "multi", "row": 2, "label": 0}],
            "item 1: its request scored 2 rows; row must be 0 to 1",
        ),
        ({"request_id": "multi", "label": 0}, "the label: its request scored 2 rows; give row (0 to 1)"),
        ({"request_id": "one", "row": 1, "label": 0}, "the label: its request scored 1 row; row must be 0 to 0"),
    ]:
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            judge(parse(body), memory)
    assert accuracy.versions == {} and not any(memory.recall("one").labeled)


def test_feedback_needs_the_prediction_log_and_another_file():
    with pytest.raises(ConfigError, match="--feedback-log needs --prediction-log"):
        ServingConfig(upstream="http://127.0.0.1:1", feedback_log="feedback.jsonl")
    with pytest.raises(ConfigError, match="another file"):
        ServingConfig(upstream="http://127.0.0.1:1", prediction_log="a.jsonl", feedback_log="./a.jsonl")


# -- the endpoint, in process ----------------------------------------------------------------


def test_labels_of_answered_rows_make_live_accuracy_per_version_in_metrics_and_health(tmp_path):
    async def body(client, router):
        first, classes = await score(client, [SETOSA, VERSICOLOR, VIRGINICA])
        assert classes == ["setosa", "versicolor", "virginica"]
        # the model calls a wide-sepalled setosa with big petals versicolor: one of three wrong
        status, answer = await send(
            client,
            [
                {"request_id": first, "row": 0, "label": "setosa"},
                {"request_id": first, "row": 1, "label": "setosa"},
                {"request_id": first, "row": 2, "label": 2},
            ],
        )
        assert (status, answer) == (200, {"accepted": 3, "counted": 3, "duplicate": 0, "not_remembered": 0})
        router.live = RuleModel("2")
        second, _ = await score(client, [SETOSA], request_id="client-chosen-id")
        assert second == "client-chosen-id"
        assert (await send(client, {"request_id": second, "label": "setosa"}))[0] == 200
        samples = await scrape_app(client)
        assert samples[("proxy_live_labeled_rows_total", (("model", "iris"), ("version", "1")))] == 3
        assert samples[("proxy_live_correct_rows_total", (("model", "iris"), ("version", "1")))] == 2
        assert samples[("proxy_live_accuracy", (("model", "iris"), ("version", "1")))] == pytest.approx(2 / 3)
        assert samples[("proxy_live_accuracy_window_rows", (("model", "iris"), ("version", "1")))] == 3
        assert samples[("proxy_live_accuracy", (("model", "iris"), ("version", "2")))] == 1.0
        assert samples[("proxy_feedback_labels_total", (("outcome", "counted"),))] == 4
        assert samples[("proxy_feedback_requests_total", (("code", "200"),))] == 2
        assert samples[("proxy_answer_memory_requests", ())] == 2
        health = await (await client.get("/health", headers=TOKEN)).json()
        live = health["feedback"]["live_accuracy"]
        assert live["window"] == 1000 and live["versions"]["1"]["correct_rows"] == 2
        assert health["feedback"]["log"]["state"] == "ok"

    serve(tmp_path, body)
    wait_until(lambda: len(read_feedback_log(tmp_path / "feedback.jsonl").records) == 4, timeout=10, what="4 labels")
    records = read_feedback_log(tmp_path / "feedback.jsonl").records
    assert [(r["row"], r["label"]) for r in records] == [(0, "setosa"), (1, "setosa"), (2, "virginica"), (0, "setosa")]


def test_a_label_for_a_request_the_proxy_does_not_remember_is_logged_and_counted_as_not_remembered(tmp_path):
    async def body(client, router):
        status, answer = await send(client, {"request_id": "from-another-replica", "row": 4, "label": "versicolor"})
        assert (status, answer["not_remembered"], answer["counted"]) == (200, 1, 0)
        samples = await scrape_app(client)
        assert samples[("proxy_feedback_labels_total", (("outcome", "not_remembered"),))] == 1
        assert not any(name == "proxy_live_labeled_rows_total" for name, _ in samples)

    serve(tmp_path, body)
    [record] = read_feedback_log(tmp_path / "feedback.jsonl").records
    assert (record["request_id"], record["row"], record["label"]) == ("from-another-replica", 4, "versicolor")


def test_a_request_forgotten_by_the_bounded_memory_counts_as_not_remembered(tmp_path):
    async def body(client, router):
        old, _ = await score(client, [SETOSA, SETOSA])
        for _ in range(3):
            await score(client, [VIRGINICA])
        status, answer = await send(client, {"request_id": old, "row": 1, "label": "setosa"})
        assert (status, answer["not_remembered"]) == (200, 1)

    serve(tmp_path, body, answer_memory_rows=3)


def test_a_bad_list_is_refused_whole_nothing_logged_nothing_counted(tmp_path):
    async def body(client, router):
        request_id, _ = await score(client, [SETOSA])
        status, error = await send(
            client, [{"request_id": request_id, "label": "setosa"}, {"request_id": request_id, "row": 3, "label": 0}]
        )
        assert status == 400 and error["error_code"] == "INVALID_FEEDBACK"
        assert error["message"].startswith("item 1: its request scored 1 row")
        assert (await send(client, {"request_id": request_id, "label": "setosa"}))[1]["counted"] == 1

    serve(tmp_path, body)
    assert len(read_feedback_log(tmp_path / "feedback.jsonl").records) == 1


def test_feedback_needs_the_token_and_a_small_enough_body(tmp_path):
    async def body(client, router):
        status, error = await send(client, {"request_id": "a", "label": 0}, headers={})
        assert (status, error["error_code"]) == (401, "UNAUTHORIZED")
        status, error = await send(client, [{"request_id": f"r{i}", "label": 0} for i in range(200)])
        assert (status, error["error_code"]) == (413, "REQUEST_TOO_LARGE")
        status, error = await send(client, [{"request_id": f"r{i}", "label": 0} for i in range(6)])
        assert (status, error["error_code"]) == (413, "TOO_MANY_ITEMS")
        response = await client.get("/feedback")
        assert response.status == 405 and response.headers["Allow"] == "POST"
        samples = await scrape_app(client)
        assert samples[("proxy_feedback_requests_total", (("code", "401"),))] == 1
        assert samples[("proxy_feedback_requests_total", (("code", "413"),))] == 2

    serve(tmp_path, body, max_body_bytes=4000, max_rows=5)


def test_without_a_feedback_log_the_endpoint_says_how_to_turn_it_on(tmp_path):
    async def body(client, router):
        status, error = await send(client, {"request_id": "a", "label": 0})
        assert (status, error["error_code"]) == (404, "FEEDBACK_DISABLED")
        assert "--feedback-log" in error["message"]
        assert "feedback" not in await (await client.get("/health", headers=TOKEN)).json()

    serve(tmp_path, body, feedback_log=None)


def test_a_feedback_log_that_cannot_be_written_refuses_labels_with_503_and_scoring_goes_on(tmp_path):
    (tmp_path / "a-directory").mkdir()

    async def body(client, router):
        async def log_state():
            return (await (await client.get("/health", headers=TOKEN)).json())["feedback"]["log"]["state"]

        for _ in range(100):  # the writer thread finds out as it starts
            if await log_state() == "failing":
                break
            await asyncio.sleep(0.05)
        request_id, _ = await score(client, [SETOSA])
        response = await client.post("/feedback", json={"request_id": request_id, "label": "setosa"}, headers=TOKEN)
        assert response.status == 503 and response.headers["Retry-After"]
        assert (await response.json())["error_code"] == "FEEDBACK_LOG_UNAVAILABLE"
        samples = await scrape_app(client)
        assert not any(name == "proxy_live_labeled_rows_total" for name, _ in samples)

    serve(tmp_path, body, feedback_log=str(tmp_path / "a-directory"))


def test_every_class_name_round_trips_through_the_log(tmp_path):
    async def body(client, router):
        for index, name in enumerate(CLASSES):
            assert (await send(client, {"request_id": f"r{index}", "label": name}))[0] == 200

    serve(tmp_path, body)
    assert [r["label"] for r in read_feedback_log(tmp_path / "feedback.jsonl").records] == list(CLASSES)


def test_an_open_inference_answer_takes_labels_like_any_other(tmp_path):
    from tests.helpers.open_inference import feature_inputs

    async def body(client, router):
        response = await client.post(
            "/v2/models/iris/infer",
            data=orjson.dumps({"inputs": feature_inputs([SETOSA, VIRGINICA])}),
            headers={**TOKEN, "X-Request-Id": "v2-request"},
        )
        assert response.status == 200 and response.headers["X-Request-Id"] == "v2-request"
        status, answer = await send(
            client,
            [{"request_id": "v2-request", "row": 0, "label": 0}, {"request_id": "v2-request", "row": 1, "label": 0}],
        )
        assert (status, answer["counted"]) == (200, 2)
        samples = await scrape_app(client)
        assert samples[("proxy_live_correct_rows_total", (("model", "iris"), ("version", "1")))] == 1

    serve(tmp_path, body)
