"""The proxy's settings in one frozen value, built once by the command line and read everywhere else.

Each setting is declared here and nowhere else, with its type, default, bounds, environment
variable and help: the command line's options are made from these declarations
(``serving.options``), and a configuration built in code is held to the same bounds.
"""

import ipaddress
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from iris_core.capture import REPLICA_RULE, check_replica
from iris_core.contract import WEBHOOK_SECRET_ENV
from iris_core.refs import (
    CHAMPION,
    DEFAULT_MODEL_NAME,
    MODEL_URI_FORM,
    RUN_MODEL_URI_FORM,
    ModelRef,
    RunModelRef,
    alias_uri,
    check_alias,
    parse_registry_or_run_uri,
)
from serving.errors import ConfigError
from serving.files.log_writer import DEFAULT_BACKUP_COUNT, DEFAULT_MAX_BYTES
from serving.options import COUNT, NOT_NEGATIVE, PORT, POSITIVE, SHARE, Bounds, check_settings, setting
from serving.protocols.scoring import Limits

DEFAULT_MODEL_URI = alias_uri(DEFAULT_MODEL_NAME, CHAMPION)
API_TOKEN_ENV = "SERVING_API_TOKEN"  # where the token is read from; never passed on to a model server
SECRET_ENVS = (API_TOKEN_ENV, WEBHOOK_SECRET_ENV)  # what a model server's environment never holds
# Seconds between registry polls. With a webhook secret, MLflow's webhooks prompt a poll the
# moment an alias moves, and the timed poll is only the net under them: MLflow sends each
# delivery once (a few retries within about two minutes, never stored), so one lost while the
# proxy restarts, or sent before a new webhook left MLflow's 60 s cache, is caught by it.
POLL_INTERVAL_S = 2.0
POLL_INTERVAL_WITH_WEBHOOKS_S = 30.0
ENV_MANAGERS = ("local", "uv", "virtualenv", "conda")


def read_token_file(path: str | Path) -> str:
    """The API token from a file (a mounted secret): its one line, without the newline."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --api-token-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not token or "\n" in token:
        raise ConfigError(f"--api-token-file {path} must hold the token alone, on one line")
    return token


def parse_model_uri(uri: str) -> ModelRef | RunModelRef:
    """A registry reference, or a run's logged model (``runs:/``: served as is, before it is registered)."""
    try:
        return parse_registry_or_run_uri(uri)
    except ValueError:
        raise ConfigError(f"--model-uri must look like {MODEL_URI_FORM} or {RUN_MODEL_URI_FORM}, got {uri!r}") from None


def parse_canary(steps: str | tuple[int, ...]) -> tuple[int, ...]:
    """``10,50,100``: the percentages of requests the new version takes, step by step, ending at 100."""
    text = steps if isinstance(steps, str) else ",".join(str(step) for step in steps)
    try:
        parsed = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"must be percentages such as 10,50,100, got {text!r}") from None
    if not parsed or parsed[-1] != 100 or any(not a < b for a, b in zip((0, *parsed), parsed)):
        raise ValueError(f"must rise from above 0 to 100 (such as 10,50,100), got {text!r}")
    return parsed


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServingConfig:
    """Every setting of the proxy, each declared once, in the order ``--help`` lists them.

    A ``setting`` is also an option of ``python -m serving`` (``serving.options``): its flag is
    ``--<name>``, its variable ``SERVING_<NAME>`` unless named, its bounds hold here and there.
    """

    # The models served: each follows its own alias with its own contract, rollouts and shadow; the
    # first also answers the routes that name no model (/invocations, /predict).
    model_uris: tuple[str, ...] = setting(
        (DEFAULT_MODEL_URI,),
        flag="--model-uri",
        envvar="SERVING_MODEL_URI",
        metavar="URI",
        multiple=True,
        help="models:/<name>@<alias> (followed: the service switches when the alias moves), models:/<name>/<version>, "
        "or runs:/<run_id>/<path> (a run's model, registered or not). Repeat it (or list them in the environment "
        "variable, comma-separated) to serve several models: the first answers /invocations and /predict, each "
        "answers /models/<name>/invocations, /models/<name>/predict and /v2/models/<name>/...",
    )
    upstream: str | None = setting(  # an `mlflow models serve` someone else runs; no process management
        None,
        metavar="URL",
        help="Proxy an `mlflow models serve` you started (e.g. http://127.0.0.1:5001) instead of starting one.",
    )
    host: str = setting("127.0.0.1", help="Address to listen on; one other than loopback needs --allow-remote.")
    port: int = setting(8000, PORT)
    allow_remote: bool = setting(
        False, help="Allow a --host that other machines can reach (e.g. 0.0.0.0 in a container)."
    )
    env_manager: str = setting(
        "local", choices=ENV_MANAGERS, help="How `mlflow models serve` builds the model's environment."
    )
    workers: int = setting(1, COUNT, help="uvicorn workers of each model server.")
    max_body_bytes: int = setting(1024 * 1024, COUNT, help="Larger bodies get 413.")
    max_rows: int = setting(Limits.max_rows, COUNT, help="More rows get 413.")
    # What a client may take of the server (serving.http.server): connections at once, and the
    # seconds to send a request's headers (from its first byte) and its body (from its headers).
    max_connections: int = setting(
        1000, COUNT, help="Connections at once; one more gets 503 and is closed, the others are served on."
    )
    header_timeout: float = setting(
        10.0,
        POSITIVE,
        help="Seconds a request's headers may take from its first byte (a new connection's from its opening); then 408.",
    )
    body_timeout: float = setting(10.0, POSITIVE, help="Seconds a request's body may take after its headers; then 408.")
    timeout: float = setting(
        30.0,
        POSITIVE,
        help="Seconds from a request's arrival (its body read) to its answer, whatever the model server does; then 504.",
    )
    api_token: str | None = setting(
        None,
        repr=False,  # a configuration logged or shown in an error never carries the token
        envvar=API_TOKEN_ENV,
        help="Require 'Authorization: Bearer <token>' on /invocations, /predict, /feedback and V2 infer. Set it in the "
        "environment or use --api-token-file: on the command line, every local user can read it (ps).",
    )
    api_token_file: str | None = setting(  # where the token is read from instead (a mounted secret)
        None, metavar="PATH", help="Read the token from this file (alone on its line), e.g. a mounted secret."
    )
    webhook_secret: str | None = setting(  # checks MLflow's webhooks (serving.registry.webhooks)
        None,
        repr=False,
        envvar=WEBHOOK_SECRET_ENV,
        help="Take MLflow's registry webhooks at POST /webhooks/mlflow, signed with this secret (the one given to "
        "`registry_tools webhook create`): an alias move is acted on at once, not at the next poll. Set it in the "
        "environment: on the command line, every local user can read it (ps).",
    )
    poll_interval: float | None = setting(  # POLL_INTERVAL_S, or POLL_INTERVAL_WITH_WEBHOOKS_S with a webhook secret
        None,
        POSITIVE,
        default_text=f"{POLL_INTERVAL_S:g}; {POLL_INTERVAL_WITH_WEBHOOKS_S:g} with --webhook-secret, the checks then "
        "only catching a delivery MLflow lost",
        help="Seconds between registry checks of the alias.",
    )
    keep_warm: int = setting(
        1, NOT_NEGATIVE, help="Previous versions kept running after a switch, for instant rollback."
    )
    pin: bool = setting(False, help="Serve the version the alias names now; do not follow it.")
    batching: bool = setting(
        True, flag="--batching/--no-batching", help="Coalesce concurrent requests into one upstream call."
    )
    max_batch_rows: int = setting(256, COUNT)
    max_batch_wait_ms: float = setting(
        2.0, NOT_NEGATIVE, help="With --workers > 1: how long a batch may wait to fill while another is in flight."
    )
    start_timeout: float = setting(
        180.0, POSITIVE, help="Seconds a model server may take to start and pass its readiness check."
    )
    # A managed model server is asked /ping this often while it runs; missing this many answers
    # in a row, each within the time-out, it counts as hung and is killed and restarted.
    liveness_interval: float = 1.0
    liveness_timeout: float = 2.0
    liveness_misses: int = 3
    log_dir: str = setting("logs/serving", help="Where model server logs go.")
    keep_logs: int = setting(  # model-server logs kept in log_dir, the newest; older ones are deleted
        20, COUNT, help="Model server logs kept in --log-dir; older ones are deleted as new servers start."
    )
    access_log: bool = setting(False, help="Log every request (costs throughput).")
    metrics_port: int | None = setting(  # GET /metrics on a listener of its own instead of the API port
        None, Bounds(1, 65535), help="Serve GET /metrics on this port (same --host) instead of on --port."
    )
    prediction_log: str | None = setting(  # JSON-lines log of scored rows (serving.observability.prediction_log)
        None,
        metavar="PATH",
        help="Append each scored row to this JSON-lines file for the monitor step (off by default).",
    )
    log_sample_rate: float = setting(1.0, SHARE, help="Share of scoring requests whose rows are logged.")
    log_max_bytes: int = setting(
        DEFAULT_MAX_BYTES, NOT_NEGATIVE, help="Rotate the prediction and feedback logs past this size (0: never)."
    )
    log_backups: int = setting(DEFAULT_BACKUP_COUNT, COUNT, help="Rotated files kept of each log (PATH.1 ... PATH.N).")
    feedback_log: str | None = setting(  # JSON-lines log of labels (POST /feedback); needs prediction_log
        None,
        metavar="PATH",
        help="Take true labels at POST /feedback and append them to this JSON-lines file (needs --prediction-log).",
    )
    answer_memory_rows: int = setting(
        100_000,
        COUNT,
        help="Rows of the latest answers remembered, so labels for them count in live accuracy at once.",
    )
    accuracy_window: int = setting(
        1000, COUNT, help="Live accuracy per version covers its latest this many labeled rows."
    )
    # capture into an artifact store (serving.capture); off unless given
    capture_uri: str | None = setting(
        None,
        metavar="URI",
        help="Capture every answered row and every label (this turns POST /feedback on) as Parquet files in an "
        "artifact location: mlflow-artifacts:/<experiment id>/capture on a tracking server started with "
        "--serve-artifacts, s3://..., gs://..., or a local directory. Off by default.",
    )
    capture_replica: str | None = setting(  # in the name of every file this proxy writes
        None, metavar="ID", help=f"This proxy's name in the files it writes ({REPLICA_RULE}); the host name by default."
    )
    capture_spool: str = setting(  # where closed files wait for the store: <spool>/<replica>/
        "logs/capture-spool",
        metavar="DIR",
        help="Local directory where closed files wait for the store (and labels, synced, for their file to close); "
        "a restart with the same spool and replica uploads what a crash left there.",
    )
    capture_spool_bytes: int = setting(
        1024**3,
        COUNT,
        help="At most this much waits in the spool; past it rows are dropped (counted) and labels refused (503).",
    )
    capture_file_rows: int = setting(50_000, COUNT, help="A file closes (and goes to the store) at this many rows ...")
    capture_file_seconds: float = setting(
        300.0, POSITIVE, help="... or this many seconds after it opened, or at the end of its hour."
    )
    # shadow: copies of live requests scored by the version another alias names (serving.rollout.shadow)
    shadow: str | None = setting(
        None,
        metavar="ALIAS",
        help="Run the version this alias names (e.g. challenger) beside the live one and score copies of live requests "
        "with it, in the background; its agreement goes to /metrics, /health and its model-version tags.",
    )
    shadow_rate: float = setting(1.0, SHARE, help="Share of answered scoring requests copied to the shadowed version.")
    shadow_timeout: float = setting(
        5.0,
        POSITIVE,
        help="Seconds per call to the shadowed model server; then the copy counts as an error.",
    )
    shadow_report_interval: float = setting(
        30.0,
        POSITIVE,
        help="Seconds between writes of the shadow evidence to the shadowed version's tags.",
    )
    # canary rollout and bake window, with automatic rollback (serving.rollout.analysis)
    canary: tuple[int, ...] = setting(
        (100,),
        metavar="STEPS",
        parse=parse_canary,
        help="Percentages of requests a new version takes, step by step, e.g. 10,50,100 (100: switch in one step).",
    )
    canary_step: float = setting(60.0, POSITIVE, help="Seconds per canary step below 100.")
    bake: float = setting(
        0.0,
        NOT_NEGATIVE,
        help="Seconds a new version is compared with the previous one after taking all requests (0: not at all).",
    )
    compare_rate: float = setting(
        0.2,
        SHARE,
        help="During a rollout: share of the new version's requests the previous version scores too, in the background.",
    )
    max_error_rate: float = setting(
        0.05,
        SHARE,
        help="Roll back when the new version's model server fails this much more often than the previous one's.",
    )
    max_latency_ratio: float = setting(
        3.0,
        POSITIVE,
        help="Roll back when its p99 call latency exceeds the previous version's by this factor.",
    )
    max_disagreement: float = setting(
        0.1,
        SHARE,
        help="Roll back when it answers another class than the previous version on more of the compared rows.",
    )
    max_class_shift: float = setting(
        0.2,
        SHARE,
        help="Roll back when its predicted-class mix differs from the previous version's by more (total variation).",
    )
    min_requests: int = setting(
        100, COUNT, help="Calls (or rows) each version needs in the window before a threshold may roll back."
    )
    grpc_port: int | None = setting(
        None,
        PORT,
        help="Serve the Open Inference Protocol over gRPC (inference.GRPCInferenceService) on this port (same --host).",
    )

    def __post_init__(self):
        self._check_models()
        if self.api_token_file is not None:
            if self.api_token:
                raise ConfigError(f"give the token once: --api-token-file or {API_TOKEN_ENV} (--api-token), not both")
            object.__setattr__(self, "api_token", read_token_file(self.api_token_file))
            # Read once: the copies ``for_model`` makes carry the token, not the file to read again.
            object.__setattr__(self, "api_token_file", None)
        if self.poll_interval is None:
            default = POLL_INTERVAL_WITH_WEBHOOKS_S if self.webhook_secret else POLL_INTERVAL_S
            object.__setattr__(self, "poll_interval", default)
        check_settings(self)
        if not self.allow_remote and not is_loopback(self.host):
            raise ConfigError(
                f"--host {self.host} accepts connections from other machines; add --allow-remote to mean it"
            )
        if self.upstream is not None and not re.fullmatch(r"https?://[^/\s]+/?", self.upstream):
            raise ConfigError(f"--upstream must be a base URL such as http://127.0.0.1:5001, got {self.upstream!r}")
        if self.feedback_log and not self.prediction_log:
            raise ConfigError(
                "--feedback-log needs --prediction-log: labels are joined with the logged predictions they belong to"
            )
        if self.feedback_log and Path(self.feedback_log).absolute() == Path(self.prediction_log).absolute():
            raise ConfigError("--feedback-log must be another file than --prediction-log")
        if self.metrics_port is not None and self.metrics_port == self.port != 0:
            raise ConfigError("--metrics-port must differ from --port (leave it out to serve /metrics on --port)")
        if self.shadow is not None:
            try:
                check_alias(self.shadow)
            except ValueError as exc:
                raise ConfigError(f"--shadow: {exc}") from None
            if self.upstream is not None or self.shadow == self.model.alias:
                raise ConfigError("--shadow names another alias of the served model, and needs no --upstream")
        self._check_capture()

    def _check_capture(self) -> None:
        if self.capture_uri is None:
            return
        if not self.capture_uri.strip():
            raise ConfigError("--capture-uri must name a location, e.g. mlflow-artifacts:/capture")
        if self.feedback_log:
            raise ConfigError("--capture-uri keeps the labels itself: leave out --feedback-log")
        replica = self.capture_replica or socket.gethostname()
        try:
            check_replica(replica)
        except ValueError as exc:
            raise ConfigError(f"--capture-replica: {exc}") from None
        object.__setattr__(self, "capture_replica", replica)

    def _check_models(self) -> None:
        if isinstance(self.model_uris, str):
            object.__setattr__(self, "model_uris", tuple(u.strip() for u in self.model_uris.split(",") if u.strip()))
        if not self.model_uris:
            raise ConfigError("--model-uri names the model to serve; give at least one")
        names = [parse_model_uri(uri).name for uri in self.model_uris]
        if len(set(names)) != len(names):
            twice = next(name for name in names if names.count(name) > 1)
            raise ConfigError(f"--model-uri names model {twice!r} twice; each model is served once")
        if self.upstream is not None and len(self.model_uris) > 1:
            raise ConfigError("--upstream fronts one model server: give it at most one --model-uri")
        if self.grpc_port and self.grpc_port in (self.port, self.metrics_port):
            raise ConfigError("--grpc-port must differ from --port and --metrics-port")

    @property
    def model_uri(self) -> str:
        """The first model's URI: the one the routes without a model name answer for."""
        return self.model_uris[0]

    @property
    def model(self) -> ModelRef | RunModelRef:
        return parse_model_uri(self.model_uri)

    @property
    def models(self) -> list[ModelRef | RunModelRef]:
        return [parse_model_uri(uri) for uri in self.model_uris]

    def for_model(self, uri: str) -> "ServingConfig":
        """These settings for one of the models: what its router, rollouts and shadow read."""
        return replace(self, model_uris=(uri,))

    @property
    def follows_alias(self) -> bool:
        """Follow the alias unless pinned, given a fixed version, or proxying someone else's server."""
        return self.model.alias is not None and not self.pin and self.upstream is None

    @property
    def delivers(self) -> bool:
        """A new version is rolled out in steps or watched after the switch, and rolled back when worse."""
        return self.canary != (100,) or self.bake > 0

    @property
    def shadow_model(self) -> ModelRef | None:
        return ModelRef(self.model.name, alias=self.shadow) if self.shadow else None

    @property
    def limits(self) -> Limits:
        return Limits(max_rows=self.max_rows)
