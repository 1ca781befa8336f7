"""list, show, history and --help: what the registry holds, as people and programs read it."""

import json

import pytest

from tests.helpers.registry_checks import assert_one_line_error


def test_list_shows_one_row_per_version_newest_first_with_what_the_pipeline_recorded(registry, run):
    result = run("list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["VERSION", "ALIASES", "CREATED", "(UTC)", "RUN", "ACCURACY", "F1", "GATE", "DATA"]
    cells = [row.split() for row in rows]
    assert [c[0] for c in cells] == ["3", "2", "1"]
    assert [c[1] for c in cells] == ["challenger", "champion", "-"]
    assert [c[-2] for c in cells] == ["failed", "passed", "passed"]
    assert [c[-1] for c in cells] == ["csv", "csv", "csv"]
    client = registry.client()
    for c in cells:
        version = client.get_model_version("iris", c[0])
        assert c[4] == version.run_id[:8]
        assert c[5] == f"{float(version.tags['eval_accuracy']):.4f}"


def test_list_json_has_every_field_for_every_version(registry, run):
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    versions = json.loads(result.stdout)
    client = registry.client()
    assert [v["version"] for v in versions] == ["3", "2", "1"]
    for v in versions:
        recorded = client.get_model_version("iris", v["version"])
        assert v["run_id"] == recorded.run_id == recorded.tags["training_run_id"]
        assert v["accuracy"] == float(recorded.tags["eval_accuracy"])
        assert v["f1_score"] == float(recorded.tags["eval_f1_score"])
        assert v["gate_decision"] == recorded.tags["gate_decision"]
        assert v["evaluation_run_id"] == recorded.tags["evaluation_run_id"]
        assert v["metrics_from"] == "evaluation"
        assert v["created_ms"] == recorded.creation_timestamp
        assert v["model_uri"] == f"models:/iris/{v['version']}"
        assert v["tags"] == recorded.tags
    assert {v["version"]: v["aliases"] for v in versions} == {"3": ["challenger"], "2": ["champion"], "1": []}


def test_list_json_leaves_out_the_training_metrics_it_did_not_fetch_instead_of_showing_none(registry, run):
    versions = json.loads(run("list", "--json").stdout)
    assert all("training_metrics" not in v for v in versions)
    shown = json.loads(run("show", "1", "--json").stdout)
    assert shown["training_metrics"]["accuracy"] > 0.9


def test_list_falls_back_to_the_training_run_metrics_for_a_version_never_evaluated(registry, run):
    client = registry.client()
    for key in ("eval_accuracy", "eval_f1_score", "gate_decision"):
        client.delete_model_version_tag("iris", "1", key)
    [v1] = [v for v in json.loads(run("list", "--json").stdout) if v["version"] == "1"]
    training = client.get_run(client.get_model_version("iris", "1").run_id).data.metrics
    assert (v1["accuracy"], v1["f1_score"], v1["metrics_from"]) == (
        training["accuracy"],
        training["f1_score"],
        "training",
    )
    assert v1["gate_decision"] is None


def test_list_of_a_model_without_versions_says_so(registry, run):
    registry.client().create_registered_model("empty")
    result = run("--model-name", "empty", "list")
    assert (result.exit_code, result.stdout) == (0, "empty has no versions\n")


@pytest.mark.parametrize("ref", ["@champion", "2", "002"])
def test_show_reports_everything_about_one_version(registry, run, ref):
    result = run("show", ref)
    assert result.exit_code == 0, result.output
    text = result.stdout
    client = registry.client()
    version = client.get_model_version("iris", "2")
    assert text.startswith("iris version 2   models:/iris/2\n")
    for expected in (
        "aliases:         @champion",
        "gate:            passed",
        f"training run:    {version.run_id}",
        f"evaluation run:  {version.tags['evaluation_run_id']}",
        "data source:     csv",
        "(held-out, by the gate)",
        "training metrics:",
        "C              0.5",
    ):
        assert expected in text
    for reason in version.tags["gate_reasons"].split("; "):
        assert f"    - {reason}\n" in text


def test_show_sums_up_what_serving_proxies_found_and_leaves_their_raw_records_out(registry, run):
    from iris_core.contract import Tag
    from iris_core.shadow_evidence import ShadowCounts, source_key, summary_tags

    client = registry.client()
    counts = ShadowCounts("2")
    counts.observe_call(8.0, [("setosa", "setosa")] * 9 + [("setosa", "virginica")], 10)
    tags = {source_key("pod-a", "2"): counts.as_json(), **summary_tags(counts)}
    tags[Tag.ROLLOUT_OUTCOME], tags[Tag.ROLLOUT_BY], tags[Tag.ROLLOUT_AT] = (
        "rolled_back",
        "pod-a",
        "2026-12-01T10:00:00Z",
    )
    tags[Tag.ROLLOUT_EVIDENCE] = json.dumps({"reason": "canary analysis: error rate 30.0% vs 0.0%", "checks": {}})
    for key, value in tags.items():
        client.set_model_version_tag("iris", "3", key, value)
    text = run("show", "3").stdout
    assert (
        "  shadow:          10 rows against version 2 (1 proxy records): agreement 0.9000, error rate 0.0000,"
        " p99 10 ms\n" in text
    )
    assert "  rollout:         rolled_back by pod-a at 2026-12-01T10:00:00Z\n" in text
    assert "    - canary analysis: error rate 30.0% vs 0.0%\n" in text
    assert "shadow.pod-a" not in text and "shadow_rows" not in text


def test_show_json_includes_the_training_run_metrics_and_all_tags(registry, run):
    result = run("show", "3", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    client = registry.client()
    version = client.get_model_version("iris", "3")
    assert shown["tags"] == version.tags
    assert shown["training_metrics"] == client.get_run(version.run_id).data.metrics
    assert shown["gate_decision"] == "failed"
    assert shown["gate_reasons"][0].startswith("accuracy ") and "< min_accuracy 1.01" in shown["gate_reasons"][0]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["show", "4"], 1, "iris has no version 4"),
        (["show", "@gold"], 1, "iris has no alias @gold"),
        (["show", "latest"], 2, "'latest' is neither a version number nor @alias"),
        (["show"], 2, "Missing argument 'REF'"),
        (["--model-name", "roses", "list"], 1, "no registered model named 'roses'"),
        (["--model-name", "roses", "history"], 1, "no registered model named 'roses'"),
        (["history", "--alias", "not an alias"], 2, "'not an alias' is not a usable alias"),
    ],
)
def test_bad_reads_fail_in_one_line(registry, run, args, code, fragment):
    assert_one_line_error(run(*args), code, fragment)


def test_history_lists_the_gates_moves_newest_first(registry, run):
    result = run("history")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["WHEN", "(UTC)", "FROM", "TO", "HOW", "BY", "REASON"]
    assert [row.split()[2:5] for row in rows] == [["1", "2", "gate"], ["-", "1", "gate"]]


def test_history_records_every_move_with_when_from_to_how_who_and_why_newest_first(registry, run):
    assert run("promote", "3", "--force", "--reason", "try it").exit_code == 0
    assert run("rollback", "--yes", "--reason", "errors up").exit_code == 0
    assert run("rollback", "--to", "2", "--yes").exit_code == 0  # already there: not a move
    assert run("promote", "1", "--dry-run").exit_code == 0  # a dry run: not a move
    moves = json.loads(run("history", "--json").stdout)
    gate_reasons = {v: registry.client().get_model_version("iris", v).tags["gate_reasons"] for v in ("1", "2")}
    assert [(m["from_version"], m["to_version"], m["how"], m["reason"]) for m in moves] == [
        ("3", "2", "rollback", "errors up"),
        ("2", "3", "promote", "try it"),
        ("1", "2", "gate", gate_reasons["2"]),
        (None, "1", "gate", gate_reasons["1"]),
    ]
    assert [m["at_ms"] for m in moves] == sorted((m["at_ms"] for m in moves), reverse=True)
    assert all(m["by"] and m["at"] and m["alias"] == "champion" for m in moves)


def test_history_of_another_alias_holds_only_its_moves(registry, run):
    moves = json.loads(run("history", "--alias", "challenger", "--json").stdout)
    assert [(m["from_version"], m["to_version"], m["how"]) for m in moves] == [
        ("2", "3", "train"),
        ("1", "2", "train"),
        (None, "1", "train"),
    ]


def test_history_of_an_alias_never_moved_says_so(registry, run):
    result = run("history", "--alias", "canary")
    assert (result.exit_code, result.stdout) == (0, "no recorded moves of iris@canary\n")


def test_history_skips_a_hand_edited_entry_it_cannot_read(registry, run):
    registry.client().set_registered_model_tag("iris", "alias_history.champion.0000000000001.junk", "not json")
    moves = json.loads(run("history", "--json").stdout)
    assert [m["to_version"] for m in moves] == ["2", "1"]


@pytest.mark.parametrize("command", [[], ["list"], ["show"], ["promote"], ["rollback"], ["history"]])
def test_help_describes_each_command_and_needs_no_store(run, command, tmp_path):
    result = run("--tracking-uri", "http://127.0.0.1:9", *command, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: registry_tools ")
    assert "--tracking-uri" in result.stdout and "--model-name" in result.stdout
    if command in (["promote"], ["rollback"]):
        assert "--dry-run" in result.stdout and "--reason" in result.stdout and "--alias" in result.stdout
    if command == ["rollback"]:
        assert "--yes" in result.stdout and "--to" in result.stdout
    assert not (tmp_path / "mlflow.db").exists()


def test_no_command_shows_the_help_and_exits_2(run):
    result = run()
    assert result.exit_code == 2
    assert "Commands:" in result.stdout and "promote" in result.stdout
