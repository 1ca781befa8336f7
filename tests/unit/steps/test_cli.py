"""The steps' command lines in process: run names and where a launched run goes (each step as ``python -m``:
``tests/integration/steps/test_cli.py``)."""


def test_a_run_name_mlflow_made_up_is_recognised_and_a_chosen_one_is_not():
    from mlflow.utils.name_utils import _generate_random_name

    from steps.common.cli import is_generated_run_name

    assert all(is_generated_run_name(_generate_random_name()) for _ in range(50))
    for chosen in ("train", "nightly-retrain-3", "my-run", "", None, "nervous-gnat"):
        assert not is_generated_run_name(chosen)


def test_a_launched_run_in_default_gets_its_name_and_a_warning_naming_the_experiment_to_use(monkeypatch, caplog):
    """What `mlflow run .` without --experiment-name hands a step: a run with a made-up name in 'Default'."""
    import logging

    import mlflow
    from mlflow.utils.name_utils import _generate_random_name

    from steps.common.cli import step_run

    launched = mlflow.MlflowClient().create_run("0", run_name=_generate_random_name())
    monkeypatch.setenv("MLFLOW_RUN_ID", launched.info.run_id)
    with caplog.at_level(logging.WARNING, logger="steps.common.cli"), step_run("train", "iris-classification") as run:
        assert run.info.run_id == launched.info.run_id
    assert mlflow.get_run(launched.info.run_id).info.run_name == "train"
    assert [r.getMessage() for r in caplog.records] == [
        "This run is in MLflow's experiment 'Default': `mlflow run` was given no --experiment-name "
        "(use --experiment-name iris-classification)"
    ]


def test_parameters_mlflow_run_logged_as_typed_are_kept_and_the_others_logged():
    import mlflow

    from steps.common.cli import log_params

    with mlflow.start_run() as run:
        mlflow.log_params({"predictions": "logs/predictions.jsonl", "alpha": ".01"})
        log_params({"predictions": "/abs/logs/predictions.jsonl", "alpha": 0.01, "model_version": "2"})
    params = mlflow.get_run(run.info.run_id).data.params
    assert params == {"predictions": "logs/predictions.jsonl", "alpha": ".01", "model_version": "2"}
