"""MLflow registry webhooks that tell serving proxies at once when an alias moves.

A webhook for a proxy's ``/webhooks/mlflow`` subscribes to the alias events
(``iris_core.contract.ALIAS_WEBHOOK_EVENTS``) with the secret the proxy checks the
signature with. Webhooks live in the tracking server's database and only a tracking server
(`mlflow server` with a SQL store) sends them, so these commands need its http(s) URI: a
webhook written straight into a database file would never be sent, and its secret would be
encrypted with a key the server does not have.
"""

import re
from dataclasses import dataclass
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from iris_core.contract import ALIAS_WEBHOOK_EVENTS
from registry_tools.errors import Refused, RegistryError
from registry_tools.versions import utc_time

PAGE_SIZE = 100
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
# What MLflow's tracking server refuses by default, and what lets it send to a proxy on its own network.
PRIVATE_TARGETS_HINT = (
    "a tracking server sends webhooks only to https URLs of public addresses unless it runs with "
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true"
)

# What a tracking server's 500 on listing its webhooks most likely means: each process of a server
# started without MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY encrypts secrets with a key of its own.
UNREADABLE = (
    "the tracking server failed to read its webhooks (HTTP 500); a server without "
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY cannot decrypt secrets that another of its workers, or its "
    "previous start, stored: give it a key and create the webhooks again"
)


@dataclass(frozen=True)
class WebhookSummary:
    """A webhook as ``webhook list`` shows it; never its secret."""

    id: str
    name: str
    url: str
    events: list[str]
    status: str
    created: str
    description: str | None

    @classmethod
    def of(cls, webhook) -> "WebhookSummary":
        return cls(
            webhook.webhook_id,
            webhook.name,
            webhook.url,
            sorted(str(event) for event in webhook.events),
            str(webhook.status),
            utc_time(webhook.creation_timestamp),
            webhook.description,
        )


def check_server(tracking_uri: str) -> None:
    """Webhooks are kept and sent by a tracking server: anything but its http(s) URI is refused."""
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        raise RegistryError(
            f"webhooks are kept and sent by a tracking server (`mlflow server` with a database), not by "
            f"{tracking_uri}: give --tracking-uri http(s)://<server>"
        )


def default_name(url: str) -> str:
    """``serving-<host>-<port>``: one webhook per proxy, named for it within MLflow's rules for names."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = _NAME_CHARACTERS.sub("-", parsed.hostname or "").strip("-._") or "proxy"
    return f"serving-{host[:40].rstrip('-._')}-{port}"


def check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RegistryError(
            f"--url must be the proxy's http(s) URL, such as http://proxy:8000/webhooks/mlflow, got {url!r}"
        )
    return url


def list_webhooks(client: MlflowClient) -> list[WebhookSummary]:
    found, token = [], None
    while True:
        try:
            page = client.list_webhooks(max_results=PAGE_SIZE, page_token=token)
        except MlflowException as exc:
            if "500 error responses" in str(exc) or "error code 500" in str(exc):
                raise RegistryError(UNREADABLE) from None
            raise
        found += [WebhookSummary.of(webhook) for webhook in page]
        token = page.token
        if not token:
            return found


def create_webhook(client: MlflowClient, url: str, secret: str, name: str, description: str) -> WebhookSummary:
    """A webhook sending the alias events to ``url``, signed with ``secret``; refused when ``url`` has one already."""
    existing = [webhook for webhook in list_webhooks(client) if webhook.url == url]
    if existing:
        raise Refused(
            f"webhook {existing[0].id} ({existing[0].name}) already sends to {url}: "
            "delete it first (a second one would prompt the proxy twice per move)"
        )
    try:
        webhook = client.create_webhook(
            name=name, url=url, events=list(ALIAS_WEBHOOK_EVENTS), description=description, secret=secret
        )
    except MlflowException as exc:
        message = exc.message.splitlines()[0] if exc.message else str(exc)
        hint = f" ({PRIVATE_TARGETS_HINT})" if "URL" in message else ""
        raise RegistryError(f"the tracking server refused the webhook: {message}{hint}") from None
    return WebhookSummary.of(webhook)


def find_webhook(client: MlflowClient, webhook_id: str) -> WebhookSummary:
    try:
        return WebhookSummary.of(client.get_webhook(webhook_id))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"no webhook {webhook_id!r} (see `webhook list`)") from None
        raise


@dataclass(frozen=True)
class Tried:
    """What the proxy answered a test delivery (MLflow's example alias event, for a model it does not serve)."""

    delivered: bool
    status: int | None
    body: str
    error: str | None


def try_webhook(client: MlflowClient, webhook_id: str) -> Tried:
    """Have the tracking server send the webhook an example alias event, signed as a real one."""
    find_webhook(client, webhook_id)
    result = client.test_webhook(webhook_id, event=ALIAS_WEBHOOK_EVENTS[0])
    body = " ".join((result.response_body or "").split())[:300]
    error = " ".join(result.error_message.split())[:300] if result.error_message else None
    return Tried(result.success, result.response_status, body, error)
