"""``python -m serving``: the validation proxy in front of ``mlflow models serve``.

Binds the listening socket (a busy port is a one-line error), resolves the model URI
once before anything starts (a missing alias is one too, not a proxy that can never
serve), then runs the aiohttp app on uvloop until SIGTERM or Ctrl-C.
"""

import logging
import socket

import click

from iris_core.command_line import run_command, setup_logging
from iris_core.contract import WEBHOOK_PATH, WEBHOOK_SECRET_ENV
from iris_core.errors import RegistryUnavailable
from iris_core.redaction import redact
from iris_core.refs import RunModelRef
from iris_core.table.contract import ContractError
from serving.capture.options import capture_options
from serving.config import API_TOKEN_ENV, POLL_INTERVAL_S, POLL_INTERVAL_WITH_WEBHOOKS_S, ServingConfig
from serving.errors import ServingError
from serving.registry.lookup import open_lookup
from serving.registry.model_facts import ModelFacts, VersionFacts, standing_in

_logger = logging.getLogger(__name__)


C = ServingConfig  # every default below is declared once, on the settings class


class ModelUris(click.ParamType):
    """A model URI; in the environment variable, several separated by commas."""

    name = "URI"
    envvar_list_splitter = ","

    def convert(self, value, param, ctx):
        return value.strip() if isinstance(value, str) else value


ENV_MANAGERS = ("local", "uv", "virtualenv", "conda")


@click.command(
    help="Serve one or more models behind the validation proxy: POST /invocations, /predict (the first model's) and "
    "/models/<name>/invocations, /models/<name>/predict (any model's), /feedback; GET /health, /ready, /ping, "
    "/version, /metrics (Prometheus; on --metrics-port when given); and the Open Inference Protocol (KServe V2) "
    "under /v2, and over gRPC with --grpc-port; and POST /webhooks/mlflow (MLflow's registry webhooks, with --webhook-secret)."
)
@click.option(
    "--model-uri",
    "model_uris",
    type=ModelUris(),
    multiple=True,
    default=C.model_uris,
    show_default=True,
    envvar="SERVING_MODEL_URI",
    show_envvar=True,
    help="models:/<name>@<alias> (followed: the service switches when the alias moves), models:/<name>/<version>, "
    "or runs:/<run_id>/<path> (a run's model, registered or not). Repeat it (or list them in the environment "
    "variable, comma-separated) to serve several models: the first answers /invocations and /predict, each "
    "answers /models/<name>/invocations, /models/<name>/predict and /v2/models/<name>/...",
)
@click.option(
    "--upstream",
    metavar="URL",
    help="Proxy an `mlflow models serve` you started (e.g. http://127.0.0.1:5001) instead of starting one.",
)
@click.option(
    "--host",
    default=C.host,
    show_default=True,
    envvar="SERVING_HOST",
    show_envvar=True,
    help="Address to listen on; one other than loopback needs --allow-remote.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=C.port, show_default=True, envvar="SERVING_PORT", show_envvar=True
)
@click.option(
    "--allow-remote", is_flag=True, help="Allow a --host that other machines can reach (e.g. 0.0.0.0 in a container)."
)
@click.option(
    "--env-manager",
    type=click.Choice(ENV_MANAGERS),
    default=C.env_manager,
    show_default=True,
    help="How `mlflow models serve` builds the model's environment.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=C.workers,
    show_default=True,
    help="uvicorn workers of each model server.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=C.max_body_bytes,
    show_default=True,
    help="Larger bodies get 413.",
)
@click.option(
    "--max-rows", type=click.IntRange(min=1), default=C.max_rows, show_default=True, help="More rows get 413."
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=C.max_connections,
    show_default=True,
    help="Connections at once; one more gets 503 and is closed, the others are served on.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=C.header_timeout,
    show_default=True,
    help="Seconds a request's headers may take from its first byte (a new connection's from its opening); then 408.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=C.body_timeout,
    show_default=True,
    help="Seconds a request's body may take after its headers; then 408.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=C.timeout,
    show_default=True,
    help="Seconds from a request's arrival (its body read) to its answer, whatever the model server does; then 504.",
)
@click.option(
    "--api-token",
    envvar=API_TOKEN_ENV,
    show_envvar=True,
    help="Require 'Authorization: Bearer <token>' on /invocations, /predict, /feedback and V2 infer. Set it in the "
    "environment or use --api-token-file: on the command line, every local user can read it (ps).",
)
@click.option(
    "--api-token-file",
    metavar="PATH",
    envvar="SERVING_API_TOKEN_FILE",
    show_envvar=True,
    help="Read the token from this file (alone on its line), e.g. a mounted secret.",
)
@click.option(
    "--webhook-secret",
    envvar=WEBHOOK_SECRET_ENV,
    show_envvar=True,
    help="Take MLflow's registry webhooks at POST /webhooks/mlflow, signed with this secret (the one given to "
    "`registry_tools webhook create`): an alias move is acted on at once, not at the next poll. Set it in the "
    "environment: on the command line, every local user can read it (ps).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    help=f"Seconds between registry checks of the alias.  [default: {POLL_INTERVAL_S:g}; "
    f"{POLL_INTERVAL_WITH_WEBHOOKS_S:g} with --webhook-secret, the checks then only catching a delivery MLflow lost]",
)
@click.option(
    "--keep-warm",
    type=click.IntRange(min=0),
    default=C.keep_warm,
    show_default=True,
    help="Previous versions kept running after a switch, for instant rollback.",
)
@click.option("--pin", is_flag=True, help="Serve the version the alias names now; do not follow it.")
@click.option(
    "--batching/--no-batching",
    default=C.batching,
    show_default=True,
    help="Coalesce concurrent requests into one upstream call.",
)
@click.option("--max-batch-rows", type=click.IntRange(min=1), default=C.max_batch_rows, show_default=True)
@click.option(
    "--max-batch-wait-ms",
    type=click.FloatRange(min=0),
    default=C.max_batch_wait_ms,
    show_default=True,
    help="With --workers > 1: how long a batch may wait to fill while another is in flight.",
)
@click.option(
    "--start-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=C.start_timeout,
    show_default=True,
    help="Seconds a model server may take to start and pass its readiness check.",
)
@click.option("--log-dir", default=C.log_dir, show_default=True, help="Where model server logs go.")
@click.option(
    "--keep-logs",
    type=click.IntRange(min=1),
    default=C.keep_logs,
    show_default=True,
    help="Model server logs kept in --log-dir; older ones are deleted as new servers start.",
)
@click.option("--access-log", is_flag=True, help="Log every request (costs throughput).")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve GET /metrics on this port (same --host) instead of on --port.",
)
@click.option(
    "--prediction-log",
    metavar="PATH",
    envvar="SERVING_PREDICTION_LOG",
    show_envvar=True,
    help="Append each scored row to this JSON-lines file for the monitor step (off by default).",
)
@click.option(
    "--log-sample-rate",
    type=click.FloatRange(0, 1),
    default=C.log_sample_rate,
    show_default=True,
    help="Share of scoring requests whose rows are logged.",
)
@click.option(
    "--log-max-bytes",
    type=click.IntRange(min=0),
    default=C.log_max_bytes,
    show_default=True,
    help="Rotate the prediction and feedback logs past this size (0: never).",
)
@click.option(
    "--log-backups",
    type=click.IntRange(min=1),
    default=C.log_backups,
    show_default=True,
    help="Rotated files kept of each log (PATH.1 ... PATH.N).",
)
@click.option(
    "--feedback-log",
    metavar="PATH",
    envvar="SERVING_FEEDBACK_LOG",
    show_envvar=True,
    help="Take true labels at POST /feedback and append them to this JSON-lines file (needs --prediction-log).",
)
@click.option(
    "--answer-memory-rows",
    type=click.IntRange(min=1),
    default=C.answer_memory_rows,
    show_default=True,
    help="Rows of the latest answers remembered, so labels for them count in live accuracy at once.",
)
@click.option(
    "--accuracy-window",
    type=click.IntRange(min=1),
    default=C.accuracy_window,
    show_default=True,
    help="Live accuracy per version covers its latest this many labeled rows.",
)
@capture_options
@click.option(
    "--shadow",
    metavar="ALIAS",
    help="Run the version this alias names (e.g. challenger) beside the live one and score copies of live requests "
    "with it, in the background; its agreement goes to /metrics, /health and its model-version tags.",
)
@click.option(
    "--shadow-rate",
    type=click.FloatRange(0, 1),
    default=C.shadow_rate,
    show_default=True,
    help="Share of answered scoring requests copied to the shadowed version.",
)
@click.option(
    "--shadow-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=C.shadow_timeout,
    show_default=True,
    help="Seconds per call to the shadowed model server; then the copy counts as an error.",
)
@click.option(
    "--shadow-report-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=C.shadow_report_interval,
    show_default=True,
    help="Seconds between writes of the shadow evidence to the shadowed version's tags.",
)
@click.option(
    "--canary",
    metavar="STEPS",
    default=",".join(map(str, C.canary)),
    show_default=True,
    help="Percentages of requests a new version takes, step by step, e.g. 10,50,100 (100: switch in one step).",
)
@click.option(
    "--canary-step",
    type=click.FloatRange(min=0, min_open=True),
    default=C.canary_step,
    show_default=True,
    help="Seconds per canary step below 100.",
)
@click.option(
    "--bake",
    type=click.FloatRange(min=0),
    default=C.bake,
    show_default=True,
    help="Seconds a new version is compared with the previous one after taking all requests (0: not at all).",
)
@click.option(
    "--compare-rate",
    type=click.FloatRange(0, 1),
    default=C.compare_rate,
    show_default=True,
    help="During a rollout: share of the new version's requests the previous version scores too, in the background.",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=C.max_error_rate,
    show_default=True,
    help="Roll back when the new version's model server fails this much more often than the previous one's.",
)
@click.option(
    "--max-latency-ratio",
    type=click.FloatRange(min=0, min_open=True),
    default=C.max_latency_ratio,
    show_default=True,
    help="Roll back when its p99 call latency exceeds the previous version's by this factor.",
)
@click.option(
    "--max-disagreement",
    type=click.FloatRange(0, 1),
    default=C.max_disagreement,
    show_default=True,
    help="Roll back when it answers another class than the previous version on more of the compared rows.",
)
@click.option(
    "--max-class-shift",
    type=click.FloatRange(0, 1),
    default=C.max_class_shift,
    show_default=True,
    help="Roll back when its predicted-class mix differs from the previous version's by more (total variation).",
)
@click.option(
    "--min-requests",
    type=click.IntRange(min=1),
    default=C.min_requests,
    show_default=True,
    help="Calls (or rows) each version needs in the window before a threshold may roll back.",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    envvar="SERVING_GRPC_PORT",
    show_envvar=True,
    help="Serve the Open Inference Protocol over gRPC (inference.GRPCInferenceService) on this port (same --host).",
)
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO", show_default=True
)
@click.pass_context
def serve(ctx: click.Context, log_level: str, **options) -> None:
    setup_logging(log_level)
    config = ServingConfig(**options)
    token_on_command_line = ctx.get_parameter_source("api_token") == click.core.ParameterSource.COMMANDLINE
    if ctx.get_parameter_source("webhook_secret") == click.core.ParameterSource.COMMANDLINE:
        _logger.warning(
            "--webhook-secret on the command line is visible to every local user (ps): set %s", WEBHOOK_SECRET_ENV
        )
    explicit_model = ctx.get_parameter_source("model_uris") != click.core.ParameterSource.DEFAULT
    from serving.http.server import ensure_open_files

    ensure_open_files(config.max_connections)
    # Listening first: a busy port fails at once, and a client that connects while the
    # model URI resolves (seconds: the registry helper imports MLflow) waits, not refused.
    listener = bind(config.host, config.port)
    metrics_listener = bind(config.host, config.metrics_port) if config.metrics_port else None
    if config.grpc_port:
        bind(config.host, config.grpc_port).close()  # a busy port fails now; the gRPC server binds it as it starts
    models = []
    try:
        for uri in config.model_uris:
            models.append(resolve_initial(config.for_model(uri), explicit_model))
    except ServingError:
        for _, lookup, _ in models:  # the models resolved before the one that failed
            if lookup is not None:
                lookup.close(wait=True)
        raise
    run(config, models, listener, metrics_listener, token_on_command_line)


def resolve_initial(config: ServingConfig, explicit_model: bool):
    """The version to serve first, the lookup that follows it, and what the registry says that version is.

    With --upstream, only a --model-uri given on purpose is looked up; without one, requests
    are checked against the Iris contract (``serving.model_facts.standing_in``). A version
    that cannot be served (no signature, inputs that are not named numeric columns) stops
    the start with the reason.
    """
    if config.upstream and not explicit_model:
        return None, None, standing_in()
    lookup = open_lookup(config.model)
    try:
        initial = lookup.resolve()
    except RegistryUnavailable as exc:
        lookup.close(wait=True)  # a time-out already stopped a hung helper inside resolve()
        raise ServingError(f"cannot resolve {config.model_uri}: {exc}") from None
    if initial is None:
        lookup.close(wait=True)
        raise ServingError(f"{config.model_uri}: the alias is not set; promote a version first")
    try:
        facts = ModelFacts.of(lookup.document(initial.version))
    except (RegistryUnavailable, ContractError) as exc:
        lookup.close(wait=True)
        raise ServingError(f"{config.model_uri} (version {initial.version}): {exc}") from None
    if not config.follows_alias and not config.shadow:
        lookup.close(wait=True)  # its helper process is not needed any more
        return initial, None, facts
    return initial, lookup, facts


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run(
    config: ServingConfig,
    models: list,
    listener: socket.socket,
    metrics_listener: socket.socket | None = None,
    token_on_command_line: bool = False,
) -> None:
    """Serve ``models``: for each ``--model-uri``, its first version, the lookup that follows it and its facts."""
    from serving.app import CONNECTIONS, create_app
    from serving.http.server import serve as serve_http
    from serving.observability.monitoring import METRICS_SOCKET
    from serving.rollout.router import Router

    routers = []
    for uri, (initial, lookup, facts) in zip(config.model_uris, models):
        known = VersionFacts(default=facts) if initial is None else VersionFacts(lookup, {initial.version: facts})
        routers.append(Router(config.for_model(uri), initial, lookup, facts=known))
    app = create_app(config, routers)
    if metrics_listener is not None:
        app[METRICS_SOCKET] = metrics_listener
    host, port = listener.getsockname()[:2]
    upstream = redact(config.upstream) if config.upstream else "its own `mlflow models serve`"
    for uri, (initial, _, _) in zip(config.model_uris, models):
        model = config.for_model(uri)
        if initial is None:
            served = "an unknown version"
        elif isinstance(model.model, RunModelRef):
            served = f"run {initial.run_id}, answers labelled {initial.version}"
        else:
            served = f"version {initial.version}"
        following = "following the alias" if model.follows_alias else "pinned"
        click.echo(f"serving {uri} ({served}, {following}) via {upstream} on http://{host}:{port}", err=True)
    if config.grpc_port is not None:
        click.echo(f"and the Open Inference Protocol over gRPC on {config.host}:{config.grpc_port}", err=True)
    if config.webhook_secret:
        polling = config.shadow or any(config.for_model(uri).follows_alias for uri in config.model_uris)
        polls = f", and polling every {config.poll_interval:g} s" if polling else ""
        click.echo(f"taking MLflow's registry webhooks at http://{host}:{port}{WEBHOOK_PATH}{polls}", err=True)
    if token_on_command_line:
        _logger.warning(
            "--api-token on the command line is visible to every local user (ps): set %s or use --api-token-file",
            API_TOKEN_ENV,
        )
    serve_http(app, listener, app[CONNECTIONS], shutdown_timeout=config.timeout + 5)
    click.echo("stopped", err=True)


def _every_option_from_the_environment(command: click.Command) -> None:
    """Every option without a variable of its own reads ``SERVING_<NAME>``, and the help shows it.

    A container or a Deployment sets a setting the way it sets the others, with no command
    line to edit; a variable named above keeps its name.
    """
    for param in command.params:
        if isinstance(param, click.Option) and not param.envvar and param.name != "help":
            param.envvar, param.show_envvar = f"SERVING_{param.name.upper()}", True


_every_option_from_the_environment(serve)


def main(argv: list[str] | None = None) -> None:
    """Usage errors exit 2, expected failures exit 1, each as one line; a clean stop exits 0."""
    run_command(serve, args=argv, prog_name="python -m serving")
