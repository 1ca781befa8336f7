"""Metric keys and plot file names made from feature and class names that hold any character."""

import pytest

from steps.common.metric_names import MAX_KEY, file_names, metric_keys

AWKWARD = [
    "od280/od315 of diluted wines",
    "malic acid",
    "alcohol %",
    "a//b",
    "x/../y",
    "/leading",
    "été",
    "a?",
    "a!",
    "a_",
    "l" * 255,
    "l" * 254 + "m",
    ".hidden",
]


def test_names_mlflow_accepts_are_kept_as_they_are():
    assert metric_keys("psi_", ["sepal_length", "malic acid", "od280/od315 of diluted wines"]) == {
        "sepal_length": "psi_sepal_length",
        "malic acid": "psi_malic acid",
        "od280/od315 of diluted wines": "psi_od280/od315 of diluted wines",
    }


def test_every_key_is_one_mlflow_logs_and_no_two_names_share_one():
    import mlflow

    keys = metric_keys("ks_pvalue_", AWKWARD)
    assert len(set(keys.values())) == len(AWKWARD)
    assert all(len(key) <= MAX_KEY for key in keys.values())
    with mlflow.start_run() as run:
        mlflow.log_metrics({key: 1.0 for key in keys.values()})
    assert set(mlflow.get_run(run.info.run_id).data.metrics) == set(keys.values())


@pytest.mark.parametrize("name", AWKWARD)
def test_a_plot_file_name_holds_no_slash_and_starts_with_no_dot(name):
    [file] = file_names([name], ".png").values()
    assert "/" not in file and not file.startswith(".") and file.endswith(".png")


def test_plots_of_names_that_clean_up_alike_do_not_overwrite_each_other():
    import mlflow
    from matplotlib.figure import Figure

    files = file_names(AWKWARD, ".png")
    assert len(set(files.values())) == len(AWKWARD)
    with mlflow.start_run() as run:
        for file in list(files.values())[:4]:
            mlflow.log_figure(Figure(), f"plots/{file}")
    listed = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert listed == {f"plots/{file}" for file in list(files.values())[:4]}
