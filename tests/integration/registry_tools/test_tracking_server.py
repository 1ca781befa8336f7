"""The same commands against a real ``mlflow server`` on loopback, with versions the pipeline made through it.

The server and its trained ``iris`` are shared by the module; each test that moves an
alias works on its own copy of ``iris`` (versions, aliases and history copied through
MLflow's own API), so the tests do not depend on each other's order.
"""

import json

import pytest

from iris_core.alias_history import alias_history
from tests.helpers.registry_checks import assert_one_line_error, champion, fresh_copy, start_cli, unchanged
from tests.helpers.support import mlflow_server
from tests.helpers.tracking import LEAKY_ENV, build_versions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An ``mlflow server`` holding iris v1, v2 (champion) and v3 (gate failed), trained through it."""
    directory = tmp_path_factory.mktemp("tracking-server")
    with mlflow_server(f"sqlite:///{directory / 'server.db'}", directory / "artifacts") as uri:
        with pytest.MonkeyPatch.context() as patch:
            for name in LEAKY_ENV:
                patch.delenv(name, raising=False)
            patch.setenv("MLFLOW_TRACKING_URI", uri)
            patch.chdir(directory)
            build_versions([{"C": 1.0}, {"C": 0.5}, {"C": 0.3, "min_accuracy": 1.01}])
        yield uri


@pytest.fixture
def remote(server, monkeypatch):
    """A client of the server, with the CLI pointed at it through MLFLOW_TRACKING_URI."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    return MlflowClient(tracking_uri=server, registry_uri=server)


@pytest.fixture
def model(remote) -> str:
    """A fresh copy of the server's iris: same versions and tags, same aliases, same alias history."""
    return fresh_copy(remote)


def test_list_over_http_shows_the_versions_the_pipeline_registered_through_the_server(remote, run):
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    versions = json.loads(result.stdout)
    assert [(v["version"], v["aliases"], v["gate_decision"]) for v in versions] == [
        ("3", ["challenger"], "failed"),
        ("2", ["champion"], "passed"),
        ("1", [], "passed"),
    ]
    assert all(v["accuracy"] is not None and v["data_source"] == "csv" for v in versions)


def test_show_over_http_includes_the_training_run_metrics(remote, run):
    shown = json.loads(run("show", "@champion", "--json").stdout)
    assert shown["version"] == "2"
    assert shown["training_metrics"]["accuracy"] == remote.get_run(shown["run_id"]).data.metrics["accuracy"]


def test_history_over_http_holds_the_gate_moves_made_by_the_pipeline(remote, run):
    moves = json.loads(run("history", "--json").stdout)
    assert [(m["from_version"], m["to_version"], m["how"]) for m in moves] == [("1", "2", "gate"), (None, "1", "gate")]


def test_promote_and_rollbacks_over_http_walk_back_and_are_recorded(remote, model, run):
    result = run("--model-name", model, "promote", "3", "--force", "--reason", "over http")
    assert result.exit_code == 0, result.output
    walked = []
    for _ in range(2):
        result = run("--model-name", model, "rollback", "--yes")
        assert result.exit_code == 0, result.output
        walked.append(champion(remote, model))
    assert walked == ["2", "1"]
    history = alias_history(remote, model, "champion")
    assert [(m.from_version, m.to_version, m.how) for m in history[:3]] == [
        ("2", "1", "rollback"),
        ("3", "2", "rollback"),
        ("2", "3", "promote"),
    ]
    assert history[2].reason == "over http"


def test_rollback_to_over_http_moves_to_the_chosen_version(remote, model, run):
    assert run("--model-name", model, "rollback", "--to", "1", "--yes").exit_code == 0
    assert champion(remote, model) == "1"


def test_dry_runs_over_http_change_nothing(remote, model, run):
    with unchanged(remote, model):
        assert run("--model-name", model, "promote", "1", "--dry-run").exit_code == 0
        assert run("--model-name", model, "rollback", "--dry-run").exit_code == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["promote", "9"], "has no version 9"),
        (["promote", "3"], "version 3 failed its gate"),
        (["promote", "@gold"], "has no alias @gold"),
    ],
)
def test_refused_moves_over_http_fail_in_one_line_and_change_nothing(remote, model, run, args, fragment):
    with unchanged(remote, model):
        assert_one_line_error(run("--model-name", model, *args), 1, fragment)


def test_rollback_past_the_first_version_over_http_changes_nothing(remote, model, run):
    assert run("--model-name", model, "rollback", "--yes").exit_code == 0
    with unchanged(remote, model):
        assert_one_line_error(run("--model-name", model, "rollback", "--yes"), 1, "no earlier version of @champion")


def test_an_unknown_model_over_http_is_reported_in_one_line(remote, run):
    assert_one_line_error(run("--model-name", "roses", "list"), 1, "no registered model named 'roses'")


def test_two_promotion_processes_racing_over_http_both_land_in_the_history(server, remote, model):
    racers = {
        version: start_cli(
            "--tracking-uri",
            server,
            "--model-name",
            model,
            "promote",
            version,
            "--force",
            "--reason",
            f"race {version}",
        )
        for version in ("1", "3")
    }
    for version, proc in racers.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, (version, out, err)
    assert sorted(m.reason for m in alias_history(remote, model, "champion")[:2]) == ["race 1", "race 3"]
    assert champion(remote, model) in {"1", "3"}
