"""Bad versions on purpose: ``misbehaving_model.py`` registered as a version of ``iris`` that wraps a good one.

The rollout benchmark and the delivery tests promote them to see a canary rollout roll
them back. Each kind is named for what a rollout must notice: ``fails`` (every call
holding a virginica row fails), ``slow`` (half a second per call), ``disagrees`` (versicolor
and virginica swapped, no error). ``bench/misbehaving_model.py`` also answers ``large``
(200 KB a row), for the shadow's tests.
"""

from pathlib import Path

MODEL_FILE = Path(__file__).with_name("misbehaving_model.py")
KINDS = {
    "fails": {"kind": "fail"},
    "slow": {"kind": "slow", "delay_s": 0.5},
    "disagrees": {"kind": "disagree"},
}


def register_misbehaving(tracking_uri: str, workdir: Path, wrapped: str, **model_config) -> str:
    """Register a version that wraps version ``wrapped`` and misbehaves as ``model_config`` says; its number."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        inner = mlflow.artifacts.download_artifacts(f"models:/iris/{wrapped}", dst_path=str(workdir / f"v{wrapped}"))
        signature = mlflow.models.get_model_info(f"models:/iris/{wrapped}").signature
        with mlflow.start_run(run_name=f"misbehaving-{model_config['kind']}"):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_FILE),
                artifacts={"model": inner},
                model_config=model_config,
                signature=signature,
                registered_model_name="iris",
            )
        return str(info.registered_model_version)
    finally:
        mlflow.set_tracking_uri(None)
