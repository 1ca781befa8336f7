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
from serving.config import API_TOKEN_ENV, ServingConfig
from serving.errors import ServingError
from serving.options import Option, click_options, options_of
from serving.registry.lookup import open_lookup
from serving.registry.model_facts import ModelFacts, VersionFacts, standing_in

_logger = logging.getLogger(__name__)


# Every setting's option is made from its declaration on ServingConfig; --log-level is the command's own.
LOG_LEVEL = Option(name="log_level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO")


@click.command(
    help="Serve one or more models behind the validation proxy: POST /invocations, /predict (the first model's) and "
    "/models/<name>/invocations, /models/<name>/predict (any model's), /feedback; GET /health, /ready, /ping, "
    "/version, /metrics (Prometheus; on --metrics-port when given); and the Open Inference Protocol (KServe V2) "
    "under /v2, and over gRPC with --grpc-port; and POST /webhooks/mlflow (MLflow's registry webhooks, with --webhook-secret)."
)
@click_options((*options_of(ServingConfig), LOG_LEVEL))
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
    are checked against the Iris contract (``serving.registry.model_facts.standing_in``). A version
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


def main(argv: list[str] | None = None) -> None:
    """Usage errors exit 2, expected failures exit 1, each as one line; a clean stop exits 0."""
    run_command(serve, args=argv, prog_name="python -m serving")
