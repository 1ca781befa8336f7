"""The proxy's settings in one frozen value, built once by the command line and read everywhere else.

Each setting's default is declared here and nowhere else: the command line's options
read them from the class (``ServingConfig.port``...).
"""

import ipaddress
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from iris_core.capture import check_replica
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


def parse_canary(text: str) -> tuple[int, ...]:
    """``10,50,100``: the percentages of requests the new version takes, step by step, ending at 100."""
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--canary must be percentages such as 10,50,100, got {text!r}") from None
    if not steps or steps[-1] != 100 or any(not a < b for a, b in zip((0, *steps), steps)):
        raise ConfigError(f"--canary must rise from above 0 to 100 (such as 10,50,100), got {text!r}")
    return steps


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServingConfig:
    # The models served: each follows its own alias with its own contract, rollouts and shadow; the
    # first also answers the routes that name no model (/invocations, /predict).
    model_uris: tuple[str, ...] = (DEFAULT_MODEL_URI,)
    grpc_port: int | None = None  # the Open Inference Protocol over gRPC on this port (same --host); off unless given
    upstream: str | None = None  # an `mlflow models serve` someone else runs; no process management
    host: str = "127.0.0.1"
    port: int = 8000
    allow_remote: bool = False
    env_manager: str = "local"
    workers: int = 1
    max_body_bytes: int = 1024 * 1024
    max_rows: int = Limits.max_rows
    timeout: float = 30.0
    # What a client may take of the server (serving.http_server): connections at once, and the
    # seconds to send a request's headers (from its first byte) and its body (from its headers).
    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    api_token: str | None = None
    api_token_file: str | None = None  # where the token is read from instead (a mounted secret)
    poll_interval: float | None = None  # POLL_INTERVAL_S, or POLL_INTERVAL_WITH_WEBHOOKS_S with a webhook secret
    webhook_secret: str | None = field(default=None, repr=False)  # checks MLflow's webhooks (serving.webhooks)
    keep_warm: int = 1
    pin: bool = False
    batching: bool = True
    max_batch_rows: int = 256
    max_batch_wait_ms: float = 2.0
    start_timeout: float = 180.0
    # A managed model server is asked /ping this often while it runs; missing this many answers
    # in a row, each within the time-out, it counts as hung and is killed and restarted.
    liveness_interval: float = 1.0
    liveness_timeout: float = 2.0
    liveness_misses: int = 3
    log_dir: str = "logs/serving"
    keep_logs: int = 20  # model-server logs kept in log_dir, the newest; older ones are deleted
    access_log: bool = False
    metrics_port: int | None = None  # GET /metrics on a listener of its own instead of the API port
    prediction_log: str | None = None  # JSON-lines log of scored rows (serving.prediction_log); off unless given
    log_sample_rate: float = 1.0
    log_max_bytes: int = DEFAULT_MAX_BYTES
    log_backups: int = DEFAULT_BACKUP_COUNT
    feedback_log: str | None = None  # JSON-lines log of labels (POST /feedback); needs prediction_log
    answer_memory_rows: int = 100_000  # rows of recent answers remembered to score labels live
    accuracy_window: int = 1000  # latest labeled rows per version that live accuracy covers
    # shadow: copies of live requests scored by the version another alias names (serving.shadow)
    shadow: str | None = None  # the alias, e.g. challenger; off unless given
    shadow_rate: float = 1.0  # share of answered scoring requests copied
    shadow_timeout: float = 5.0  # per call to the shadowed model server
    shadow_report_interval: float = 30.0  # seconds between writes of the evidence to the registry
    # canary rollout and bake window, with automatic rollback (serving.analysis)
    canary: tuple[int, ...] = (100,)  # percentages of requests per step; (100,) switches in one step
    canary_step: float = 60.0  # seconds per step below 100
    bake: float = 0.0  # seconds the new version is watched at 100% with the previous one warm
    compare_rate: float = 0.2  # share of the new version's requests the previous one scores too
    max_error_rate: float = 0.05
    max_latency_ratio: float = 3.0
    max_disagreement: float = 0.1
    max_class_shift: float = 0.2
    min_requests: int = 100  # calls or rows each side needs before a check may fire
    # capture into an artifact store (serving.capture); off unless given
    capture_uri: str | None = None  # mlflow-artifacts:/..., s3://..., gs://..., a local directory
    capture_replica: str | None = None  # in the name of every file this proxy writes; the host name unless given
    capture_spool: str = "logs/capture-spool"  # where closed files wait for the store: <spool>/<replica>/
    capture_spool_bytes: int = 1024**3
    capture_file_rows: int = 50_000  # a file closes at this many rows ...
    capture_file_seconds: float = 300.0  # ... or this long after its first row

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
        if not self.allow_remote and not is_loopback(self.host):
            raise ConfigError(
                f"--host {self.host} accepts connections from other machines; add --allow-remote to mean it"
            )
        positive = {
            "--max-body-bytes": self.max_body_bytes,
            "--max-rows": self.max_rows,
            "--timeout": self.timeout,
            "--max-connections": self.max_connections,
            "--header-timeout": self.header_timeout,
            "--body-timeout": self.body_timeout,
            "--poll-interval": self.poll_interval,
            "--workers": self.workers,
            "--max-batch-rows": self.max_batch_rows,
            "--start-timeout": self.start_timeout,
            "--keep-logs": self.keep_logs,
        }
        for option, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{option} must be > 0, got {value}")
        if self.keep_warm < 0 or self.max_batch_wait_ms < 0:
            raise ConfigError("--keep-warm and --max-batch-wait-ms must be >= 0")
        if self.upstream is not None and not re.fullmatch(r"https?://[^/\s]+/?", self.upstream):
            raise ConfigError(f"--upstream must be a base URL such as http://127.0.0.1:5001, got {self.upstream!r}")
        if not 0 <= self.log_sample_rate <= 1 or self.log_max_bytes < 0 or self.log_backups < 1:
            raise ConfigError("--log-sample-rate must be between 0 and 1, --log-max-bytes >= 0, --log-backups >= 1")
        if self.feedback_log and not self.prediction_log:
            raise ConfigError(
                "--feedback-log needs --prediction-log: labels are joined with the logged predictions they belong to"
            )
        if self.feedback_log and Path(self.feedback_log).absolute() == Path(self.prediction_log).absolute():
            raise ConfigError("--feedback-log must be another file than --prediction-log")
        if self.answer_memory_rows < 1 or self.accuracy_window < 1:
            raise ConfigError("--answer-memory-rows and --accuracy-window must be >= 1")
        if self.metrics_port is not None and self.metrics_port == self.port != 0:
            raise ConfigError("--metrics-port must differ from --port (leave it out to serve /metrics on --port)")
        self._check_delivery()
        self._check_capture()

    def _check_capture(self) -> None:
        positive = {
            "--capture-spool-bytes": self.capture_spool_bytes,
            "--capture-file-rows": self.capture_file_rows,
            "--capture-file-seconds": self.capture_file_seconds,
        }
        for option, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{option} must be > 0, got {value}")
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

    def _check_delivery(self) -> None:
        if isinstance(self.canary, str):
            object.__setattr__(self, "canary", parse_canary(self.canary))
        else:
            parse_canary(",".join(str(step) for step in self.canary))
        if self.shadow is not None:
            try:
                check_alias(self.shadow)
            except ValueError as exc:
                raise ConfigError(f"--shadow: {exc}") from None
            if self.upstream is not None or self.shadow == self.model.alias:
                raise ConfigError("--shadow names another alias of the served model, and needs no --upstream")
        shares = {"--shadow-rate": self.shadow_rate, "--compare-rate": self.compare_rate}
        limits = {"--max-error-rate": self.max_error_rate, "--max-disagreement": self.max_disagreement}
        limits["--max-class-shift"] = self.max_class_shift
        for option, value in {**shares, **limits}.items():
            if not 0 <= value <= 1:
                raise ConfigError(f"{option} must be between 0 and 1, got {value}")
        positive = {
            "--shadow-timeout": self.shadow_timeout,
            "--shadow-report-interval": self.shadow_report_interval,
            "--canary-step": self.canary_step,
            "--max-latency-ratio": self.max_latency_ratio,
            "--min-requests": self.min_requests,
        }
        for option, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{option} must be > 0, got {value}")
        if not self.bake >= 0:
            raise ConfigError(f"--bake must be >= 0, got {self.bake}")

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
