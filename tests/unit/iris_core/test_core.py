"""The shared core: one definition of each concept, and the runner and resolver every command relies on."""

import click
import pytest

from iris_core.command_line import run_command
from iris_core.contract import join_reasons, split_reasons
from iris_core.errors import NotFound, RegistryUnavailable
from iris_core.redaction import redact
from iris_core.refs import ModelRef, RunModelRef, parse_registry_or_run_uri, parse_run_model_uri
from iris_core.resolver import Resolved, alias_version, resolve
from iris_core.tracking import HTTP_DEFAULTS, check_store, one_line
from steps.common.errors import InvalidParameter, StepError
from tests.helpers.support import free_port


def test_the_model_file_returns_exactly_the_project_outputs_the_core_reads():
    from iris_core.table.models import PROJECT_OUTPUTS
    from steps.training import iris_model  # MLflow copies this file into the model, so it keeps its own copy

    assert tuple(iris_model.OUTPUT_COLUMNS) == PROJECT_OUTPUTS


def test_gate_reasons_read_back_as_they_were_written():
    reasons = ["accuracy 0.9667 >= min_accuracy 0.9", "f1_score 0.9666 vs champion 0.9666: drop 0.0000 within 0.01"]
    assert split_reasons(join_reasons(reasons)) == reasons
    assert split_reasons(None) == [] and split_reasons("") == []


def exit_of(command: click.Command, *args: str) -> int:
    with pytest.raises(SystemExit) as ended:
        run_command(command, args=list(args), prog_name="tool")
    return ended.value.code


def command_raising(error: BaseException) -> click.Command:
    @click.command()
    @click.option("--n", type=int, default=1)
    def tool(n):
        raise error

    return tool


@pytest.mark.parametrize(
    "error, code, line",
    [
        (StepError("no model version found for models:/iris/9"), 1, "error: no model version found for models:/iris/9"),
        (InvalidParameter("C must be a positive number, got 0.0"), 2, "error: C must be a positive number, got 0.0"),
        (ConnectionRefusedError(111, "Connection refused"), 1, "error: tracking server unreachable: "),
        (KeyboardInterrupt(), 130, "\n"),  # click ends the ^C line; nothing else is said
    ],
)
def test_the_runner_ends_every_outcome_with_its_exit_code_and_at_most_one_line(capsys, error, code, line):
    assert exit_of(command_raising(error)) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line) and "Traceback" not in err


def test_the_runner_gives_a_usage_error_exit_2_and_names_the_help(capsys):
    assert exit_of(command_raising(StepError("unreached")), "--n", "x") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid value for '--n'") and "(see 'tool --help')" in err and err.count("\n") == 1


def test_an_mlflow_error_is_one_line_with_its_cause(capsys):
    from mlflow.exceptions import MlflowException

    assert (
        exit_of(command_raising(MlflowException("API request to endpoint /api/2.0/x failed with error code 403"))) == 1
    )
    assert capsys.readouterr().err.startswith("error: permission denied by the tracking server (403)")


@pytest.fixture
def store(registry):
    return registry.client()


def test_the_resolver_finds_an_alias_and_a_version_with_their_runs(store):
    by_alias = resolve(store, ModelRef("iris", alias="champion"))
    by_version = resolve(store, ModelRef("iris", version="2"))
    assert by_alias == by_version and by_alias.version == "2" and by_alias.run_id
    assert alias_version(store, "iris", "champion") == "2" and alias_version(store, "iris", "gold") is None


@pytest.mark.parametrize(
    "ref, missing, message",
    [
        (ModelRef("roses", alias="champion"), "model", "no registered model named 'roses'"),
        (ModelRef("iris", alias="gold"), "alias", "iris has no alias @gold (aliases: @challenger, @champion)"),
        (ModelRef("iris", version="9"), "version", "iris has no version 9"),
    ],
)
def test_the_resolver_says_which_part_the_registry_does_not_hold(store, ref, missing, message):
    with pytest.raises(NotFound) as found:
        resolve(store, ref)
    assert (found.value.missing, str(found.value)) == (missing, message)


def test_the_resolver_tells_an_unreachable_registry_from_a_missing_model(monkeypatch):
    from mlflow import MlflowClient

    for key in HTTP_DEFAULTS:
        monkeypatch.setenv(key, "0" if key.endswith("RETRIES") else "2")
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        resolve(client, ModelRef("iris", alias="champion"))


def test_a_runs_uri_names_a_run_and_an_artifact_path_and_nothing_else_is_one():
    ref = parse_run_model_uri("runs:/0123456789abcdef0123456789abcdef/model")
    assert (ref.run_id, ref.artifact_path, ref.uri) == (
        "0123456789abcdef0123456789abcdef",
        "model",
        "runs:/0123456789abcdef0123456789abcdef/model",
    )
    assert (ref.name, ref.alias, ref.version) == ("run-0123456789abcdef0123456789abcdef", None, None)
    for bad in (
        "runs:/0123456789abcdef/../model",
        "runs:/not-a-run-id/model",
        "runs:/0123456789abcdef/",
        "models:/x/1",
    ):
        with pytest.raises(ValueError):
            parse_run_model_uri(bad)


def test_a_served_model_uri_is_a_registry_reference_or_a_runs_model_and_nothing_else():
    assert parse_registry_or_run_uri("models:/iris@champion") == ModelRef("iris", "champion", None)
    assert parse_registry_or_run_uri(" models:/iris/3") == ModelRef("iris", None, "3")
    run = parse_registry_or_run_uri(" runs:/0123456789abcdef0123456789abcdef/model")
    assert isinstance(run, RunModelRef) and run.artifact_path == "model"
    for bad in ("s3://bucket/model", "models:/", "runs:/not-a-run-id/model", ""):
        with pytest.raises(ValueError):
            parse_registry_or_run_uri(bad)


def test_the_resolver_checks_a_runs_model_exists_and_says_what_is_missing(store):
    run_id = store.get_model_version("iris", "1").run_id
    found = resolve(store, parse_run_model_uri(f"runs:/{run_id}/model"))
    assert found == Resolved(f"run-{run_id}", run_id)
    with pytest.raises(NotFound, match=f"run {run_id} logged no model at 'data'") as no_model:
        resolve(store, parse_run_model_uri(f"runs:/{run_id}/data"))
    with pytest.raises(NotFound, match="no run with ID 0123456789abcdef") as no_run:
        resolve(store, parse_run_model_uri("runs:/0123456789abcdef/model"))
    assert (no_model.value.missing, no_run.value.missing) == ("model", "run")


@pytest.mark.parametrize(
    ("shown", "redacted"),
    [
        ("http://alice:s3cret@mlflow:5000/api", "http://***@mlflow:5000/api"),
        ("postgresql://mlflow:p@ss@db.example.com/mlflow", "postgresql://***@db.example.com/mlflow"),
        ("at http://a:b@h1/x and https://c@h2", "at http://***@h1/x and https://***@h2"),
        ("http://127.0.0.1:5001/invocations", "http://127.0.0.1:5001/invocations"),
        ("mail alice@example.com", "mail alice@example.com"),
    ],
)
def test_credentials_in_any_url_of_a_text_are_redacted_and_the_rest_kept(shown, redacted):
    assert redact(shown) == redacted


def test_a_tracking_error_names_its_server_without_the_password_in_its_uri():
    with pytest.raises(RegistryUnavailable) as caught:
        check_store(f"http://alice:s3cret@127.0.0.1:{free_port()}")
    assert "s3cret" not in str(caught.value) and "***@127.0.0.1" in str(caught.value)
    assert "s3cret" not in one_line(ConnectionError("Failed to establish: http://alice:s3cret@db:5432/x"))
