"""The ``registry_tools`` command line: list, show, promote, roll back and audit model versions; manage webhooks.

Thin click commands over ``versions``, ``promotion``, ``aliases`` and ``webhooks``. The MLflow client
lives in ``ctx.obj`` and is made on first use, so ``--help`` and usage errors never touch
the network; each command asks for it before importing anything that imports MLflow, so
a store that is not there fails in well under a second. Every expected failure ends as
one line on stderr: usage errors exit 2, failed operations exit 1.
"""

import contextlib
import functools
import logging
import os
import sys
import warnings
from dataclasses import asdict, replace

import click

from iris_core.command_line import run_command, setup_logging
from iris_core.contract import ALIAS_WEBHOOK_EVENTS, WEBHOOK_PATH, WEBHOOK_SECRET_ENV
from iris_core.refs import CHAMPION, DEFAULT_MODEL_NAME, check_alias, parse_ref
from iris_core.tracking import check_store
from registry_tools.errors import Refused, RegistryError

_logger = logging.getLogger(__name__)

MAX_REASON_LENGTH = 1000


class RegistryContext:
    """The store and model every command works on, and the MLflow client, made once on first use."""

    def __init__(self, tracking_uri: str | None, model_name: str, verbose: bool = False):
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.verbose = verbose

    @functools.cached_property
    def registry_uri(self) -> str:
        return os.environ.get("MLFLOW_REGISTRY_URI") or self.tracking_uri or _default_tracking_uri()

    @functools.cached_property
    def client(self):
        """Checked before MLflow is even imported, so a dead server fails in about a second."""
        uri = self.tracking_uri or _default_tracking_uri()
        registry_uri = self.registry_uri
        for store in dict.fromkeys((uri, registry_uri)):
            check_store(store)
        import mlflow

        if not self.verbose:  # importing mlflow has just configured its loggers
            logging.getLogger("mlflow").setLevel(logging.ERROR)
        _logger.debug("tracking store %s, registry %s", uri, registry_uri)
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=registry_uri)


def _default_tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


class RegistryGroup(click.Group):
    """A group whose every failure is one line and an exit code, in a terminal and under CliRunner alike."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        with warnings.catch_warnings(), _quiet_mlflow(_verbose(args)):
            run_command(self, args=args, prog_name=prog_name, complete_var=complete_var, **extra)


@contextlib.contextmanager
def _quiet_mlflow(verbose: bool):
    """MLflow's warnings and log lines would break the one-line promise; --verbose lets them through."""
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    if not verbose:
        warnings.simplefilter("ignore")
    try:
        yield
    finally:
        mlflow_logger.setLevel(level)


def _verbose(args) -> bool:
    args = sys.argv[1:] if args is None else args
    return "-v" in args or "--verbose" in args


def _set_store_option(ctx, param, value):
    """A store option given after the command name overrides the one given before it."""
    if value is not None:
        setattr(ctx.find_object(RegistryContext), param.name, value)


def store_options(*, on_group: bool, model: bool = True):
    """--tracking-uri and (unless ``model`` is False) --model-name, accepted before the command name and after it."""

    def decorate(function):
        common = {"expose_value": on_group, "callback": None if on_group else _set_store_option}
        if model:
            function = click.option(
                "--model-name",
                metavar="NAME",
                default=DEFAULT_MODEL_NAME if on_group else None,
                show_default=on_group,
                help="Registered model to work on.",
                **common,
            )(function)
        return click.option(
            "--tracking-uri",
            metavar="URI",
            envvar="MLFLOW_TRACKING_URI" if on_group else None,
            show_envvar=on_group,
            help="Tracking store: sqlite:///path/mlflow.db or http://host:port (default: MLflow's, ./mlflow.db).",
            **common,
        )(function)

    return decorate


def _check_alias(ctx, param, value: str) -> str:
    try:
        return check_alias(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_reason(ctx, param, value: str) -> str:
    if len(value) > MAX_REASON_LENGTH:
        raise click.BadParameter(f"at most {MAX_REASON_LENGTH} characters, got {len(value)}")
    return value.strip()


class RefType(click.ParamType):
    """A version number (``3``) or an alias (``@champion``)."""

    name = "REF"

    def convert(self, value, param, ctx):
        try:
            return parse_ref(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


alias_option = click.option(
    "--alias", default=CHAMPION, show_default=True, callback=_check_alias, help="The alias to move or read."
)
reason_option = click.option("--reason", default="", callback=_check_reason, help="Why; recorded in the alias history.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Print what would change and change nothing.")


@click.group(cls=RegistryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@store_options(on_group=True)
@click.option("-v", "--verbose", is_flag=True, help="Log each step, and the traceback of an unexpected error.")
@click.pass_context
def cli(ctx, tracking_uri, model_name, verbose):
    """Promote, roll back and audit model versions by moving Model Registry aliases.

    Every move of an alias made here or by the pipeline's gate is recorded in the
    registry itself, so `history` and `rollback` work against any tracking store.
    """
    setup_logging(logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = RegistryContext(tracking_uri, model_name, verbose)


@cli.command("list")
@store_options(on_group=False)
@json_option
@click.pass_obj
def list_command(obj: RegistryContext, as_json):
    """One row per version, newest first: aliases, creation time, run, metrics, gate decision, data."""
    client = obj.client
    from registry_tools import render
    from registry_tools.versions import list_versions

    versions = list_versions(client, obj.model_name)
    if as_json:
        click.echo(render.as_json([v.as_dict() for v in versions]))
    elif versions:
        click.echo(render.versions_table(versions))
    else:
        click.echo(f"{obj.model_name} has no versions")


@cli.command()
@click.argument("ref", type=RefType())
@store_options(on_group=False)
@json_option
@click.pass_obj
def show(obj: RegistryContext, ref, as_json):
    """Everything about one version; REF is a version number or @alias."""
    client = obj.client
    from registry_tools import render
    from registry_tools.versions import show_version

    summary = show_version(client, obj.model_name, ref)
    click.echo(render.as_json(summary.as_dict()) if as_json else render.version_details(summary))


@cli.command()
@click.argument("ref", type=RefType())
@store_options(on_group=False)
@alias_option
@reason_option
@click.option("--force", is_flag=True, help="Promote even a version whose evaluation gate failed.")
@dry_run_option
@click.pass_obj
def promote(obj: RegistryContext, ref, alias, reason, force, dry_run):
    """Point the alias at a version (REF: number or @alias).

    Refuses a version whose gate failed unless --force.
    """
    client = obj.client
    from registry_tools.promotion import plan_promotion

    plan = plan_promotion(client, obj.model_name, ref, alias, reason=reason, force=force)
    _carry_out(obj, plan, dry_run)


@cli.command()
@store_options(on_group=False)
@alias_option
@click.option("--to", "to", type=RefType(), help="Roll back to this version (number or @alias) instead.")
@reason_option
@click.option("--force", is_flag=True, help="Allow --to a version whose evaluation gate failed.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@dry_run_option
@click.pass_obj
def rollback(obj: RegistryContext, alias, to, reason, force, yes, dry_run):
    """Move the alias back to the version that held it before the current one.

    Repeated rollbacks walk further back through the alias history (3 -> 2 -> 1).
    """
    client = obj.client
    from registry_tools.promotion import plan_rollback

    plan = plan_rollback(client, obj.model_name, alias, to=to, reason=reason, force=force)
    _confirm(f"roll back {plan.describe()}", "rollback", yes or dry_run or plan.changes_nothing)
    _carry_out(obj, plan, dry_run)


def _confirm(action: str, what: str, skip: bool) -> None:
    """Ask on the terminal before ``action`` unless ``skip`` (--yes, --dry-run); without a terminal, a usage error."""
    if skip:
        return
    if not click.get_text_stream("stdin").isatty():
        raise click.UsageError(f"no terminal to confirm on: pass --yes to {action}")
    if not click.confirm(f"{action[0].upper()}{action[1:]}?", default=False):
        raise Refused(f"{what} not confirmed; nothing changed")


def _carry_out(obj: RegistryContext, plan, dry_run: bool) -> None:
    from registry_tools.promotion import apply

    if plan.changes_nothing:
        click.echo(f"{plan.model_name}@{plan.alias} already points to version {plan.to_version}; nothing changed")
    elif dry_run:
        click.echo(f"dry run: would move {plan.describe()} ({plan.how}); nothing changed")
    else:
        move = apply(obj.client, plan)  # from_version as found at the move, in case someone moved it since
        click.echo(f"moved {replace(plan, from_version=move.from_version).describe()} ({move.how} by {move.by})")


@cli.command()
@store_options(on_group=False)
@alias_option
@json_option
@click.pass_obj
def history(obj: RegistryContext, alias, as_json):
    """Every recorded move of the alias, newest first: when, from, to, how, by whom and why."""
    client = obj.client
    from iris_core.alias_history import parse_history
    from registry_tools import render
    from registry_tools.versions import get_model

    moves = parse_history(get_model(client, obj.model_name).tags, alias)
    if as_json:
        click.echo(render.as_json([render.move_dict(m) for m in moves]))
    elif moves:
        click.echo(render.history_table(moves))
    else:
        click.echo(f"no recorded moves of {obj.model_name}@{alias}")


# -- webhooks ---------------------------------------------------------------------------------------


@cli.group()
def webhook():
    """MLflow registry webhooks that tell serving proxies at once when an alias moves.

    A tracking server (`mlflow server` with a database) sends them; --tracking-uri must be its
    http(s) URI. The proxy takes them at POST /webhooks/mlflow when it has a webhook secret.
    """


@webhook.command("create")
@click.option(
    "--url",
    required=True,
    help=f"Where the proxy takes the webhooks, e.g. http://proxy:8000{WEBHOOK_PATH}.",
)
@click.option(
    "--secret-env",
    metavar="VAR",
    default=WEBHOOK_SECRET_ENV,
    show_default=True,
    help="Environment variable holding the secret the deliveries are signed with: the proxy's own.",
)
@click.option("--name", help="The webhook's name.  [default: serving-<host>-<port>]")
@click.option(
    "--description", default="alias moves, for a serving proxy", show_default=True, help="The webhook's description."
)
@store_options(on_group=False, model=False)
@dry_run_option
@click.pass_obj
def webhook_create(obj: RegistryContext, url, secret_env, name, description, dry_run):
    """Send the alias events (set and deleted, of every model) to a proxy, signed with its secret.

    Refused when a webhook already sends to that URL.
    """
    from registry_tools.webhooks import check_server, check_url, create_webhook, default_name

    check_url(url)
    secret = os.environ.get(secret_env, "")
    if not secret.strip():
        its = "" if secret_env == WEBHOOK_SECRET_ENV else f" (its {WEBHOOK_SECRET_ENV})"
        raise click.UsageError(f"set {secret_env} to the proxy's webhook secret{its}")
    check_server(obj.registry_uri)
    name = name or default_name(url)
    events = ", ".join(ALIAS_WEBHOOK_EVENTS)
    if dry_run:
        click.echo(
            f"dry run: would create webhook {name}: {events} -> {url}, signed with ${secret_env}; nothing changed"
        )
        return
    made = create_webhook(obj.client, url, secret, name, description)
    click.echo(f"created webhook {made.id} ({made.name}): {events} -> {made.url}, signed with ${secret_env}")


@webhook.command("list")
@store_options(on_group=False, model=False)
@json_option
@click.pass_obj
def webhook_list(obj: RegistryContext, as_json):
    """Every webhook of the tracking server, oldest first: id, name, status, events and URL (never its secret)."""
    from registry_tools.webhooks import check_server, list_webhooks

    check_server(obj.registry_uri)
    from registry_tools import render

    webhooks = list_webhooks(obj.client)
    if as_json:
        click.echo(render.as_json([asdict(w) for w in webhooks]))
    elif webhooks:
        click.echo(render.webhooks_table(webhooks))
    else:
        click.echo("no webhooks")


@webhook.command("delete")
@click.argument("webhook_id", metavar="ID")
@store_options(on_group=False, model=False)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@dry_run_option
@click.pass_obj
def webhook_delete(obj: RegistryContext, webhook_id, yes, dry_run):
    """Stop sending to a proxy; it then learns of alias moves by polling alone."""
    from registry_tools.webhooks import check_server, find_webhook

    check_server(obj.registry_uri)
    found = find_webhook(obj.client, webhook_id)
    _confirm(f"delete webhook {found.id} ({found.name}) sending to {found.url}", "deletion", yes or dry_run)
    if dry_run:
        click.echo(f"dry run: would delete webhook {found.id} ({found.name}) sending to {found.url}; nothing changed")
        return
    obj.client.delete_webhook(found.id)
    click.echo(f"deleted webhook {found.id} ({found.name}) sending to {found.url}")


@webhook.command("test")
@click.argument("webhook_id", metavar="ID")
@store_options(on_group=False, model=False)
@click.pass_obj
def webhook_test(obj: RegistryContext, webhook_id):
    """Have the tracking server send an example alias event, signed, to the webhook's URL; print the answer.

    The example names a model no proxy serves, so it changes nothing; it fails (exit 1)
    when the proxy cannot be reached or refuses the signature.
    """
    from registry_tools.webhooks import check_server, try_webhook

    check_server(obj.registry_uri)
    tried = try_webhook(obj.client, webhook_id)
    if not tried.delivered:
        answer = f"HTTP {tried.status} {tried.body}" if tried.status else tried.error
        raise RegistryError(f"the test delivery failed: {answer}")
    click.echo(f"delivered: HTTP {tried.status} {tried.body}")
