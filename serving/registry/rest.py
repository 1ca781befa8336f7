"""The registry of an http(s) tracking server, asked over MLflow's REST API without importing MLflow.

``RestRegistryLookup`` runs the operations of ``serving.registry.base`` (the resolver, the
version tags, the alias history's compare-and-set move: the core's logic, written once)
in a worker thread over ``RestRegistryClient``, a ``RegistryClient`` whose every call is
one request made on the proxy's event loop with aiohttp, under a deadline. The proxy's
process tree then holds no MLflow beyond the model servers.

It authenticates as MLflow's client does (``mlflow.utils.credentials``,
``mlflow.utils.rest_utils.http_request``): ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (or the ``[mlflow]`` section of ``~/.mlflow/credentials``) as
basic auth, else ``MLFLOW_TRACKING_TOKEN`` as a bearer token; TLS follows
``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH`` and
``MLFLOW_TRACKING_CLIENT_CERT_PATH``; the deadline is ``MLFLOW_HTTP_REQUEST_TIMEOUT``.
An error answer is read by MLflow's ``error_code`` in its JSON body, never by its text, so
a missing model reads as MLflow's client reads it, and a proxy or another server that
answers 404 without that code reads as "unavailable", not "not found".
"""

import asyncio
import base64
import configparser
import contextlib
import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import aiohttp

from iris_core.errors import RegistryUnavailable
from iris_core.refs import ModelRef, RunModelRef
from iris_core.registry_client import RegistryApiError
from serving.registry.base import LOOKUP_TIMEOUT_S, RegistryLookup, example_rows, reported, unpacked

API_PREFIX = "/api/2.0/mlflow/"
ARTIFACTS_PREFIX = "/api/2.0/mlflow-artifacts/artifacts/"  # the server's artifact proxy (--serve-artifacts)
DEFAULT_TIMEOUT_S = 15.0  # per request, when MLFLOW_HTTP_REQUEST_TIMEOUT is not set
MAX_ANSWER_BYTES = 32 * 2**20  # a model's tags (its alias history) are far smaller
_TRUE, _FALSE = ("true", "1"), ("false", "0")


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to reach it, read from the environment once."""

    base_url: str
    host: str  # for messages: host:port, never the credentials
    headers: dict = field(repr=False)
    ssl: ssl.SSLContext | bool
    timeout_s: float

    @classmethod
    def from_env(cls, uri: str, env=os.environ) -> "Connection":
        parsed = urlparse(uri)
        host = parsed.hostname or "?"
        host = f"{host}:{parsed.port}" if parsed.port else host
        headers = {"Accept": "application/json"}
        if authorization := _authorization(env):
            headers["Authorization"] = authorization
        tls = _tls(env) if parsed.scheme == "https" else True
        return cls(uri.rstrip("/"), host, headers, tls, _timeout(env))


def _authorization(env) -> str | None:
    """MLflow's precedence: a username and a password (environment first, then the credentials file), then a token."""
    username, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    file_username, file_password = _credentials_file(env)
    username, password = username or file_username, password or file_password
    if username and password:
        return "Basic " + base64.standard_b64encode(f"{username}:{password}".encode()).decode()
    if token := env.get("MLFLOW_TRACKING_TOKEN"):
        return f"Bearer {token}"
    return None


def _credentials_file(env) -> tuple[str | None, str | None]:
    home = env.get("HOME") or os.path.expanduser("~")
    config = configparser.ConfigParser()
    try:
        config.read(Path(home) / ".mlflow" / "credentials")
    except configparser.Error:
        return None, None
    if "mlflow" not in config:
        return None, None
    section = config["mlflow"]
    return section.get("mlflow_tracking_username"), section.get("mlflow_tracking_password")


def _flag(env, name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value and value not in _TRUE + _FALSE:
        raise RegistryUnavailable(f"{name} must be one of true, false, 1, 0, got {value!r}")
    return value in _TRUE


def _tls(env) -> ssl.SSLContext | bool:
    """False to skip verification; else a context trusting what MLflow's client (requests) would trust."""
    server_cert = env.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    if _flag(env, "MLFLOW_TRACKING_INSECURE_TLS"):
        if server_cert:
            raise RegistryUnavailable(
                "MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH cannot both be set"
            )
        return False
    cafile = server_cert or env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or _certifi_bundle()
    try:
        context = ssl.create_default_context(cafile=cafile)
        if client_cert := env.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
            context.load_cert_chain(client_cert)  # one PEM file with the certificate and its key, as requests takes it
    except (OSError, ssl.SSLError) as exc:
        raise RegistryUnavailable(f"cannot read the TLS certificates: {exc.strerror or exc}") from None
    return context


def _certifi_bundle() -> str | None:
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def _timeout(env) -> float:
    try:
        value = float(env.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or DEFAULT_TIMEOUT_S)
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    aliases: dict[str, str]
    tags: dict[str, str]


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    artifact_uri: str


@dataclass(frozen=True)
class Run:
    info: RunInfo


@dataclass(frozen=True)
class FileInfo:
    path: str
    is_dir: bool


class RestRegistryClient:
    """The ``RegistryClient`` calls as MLflow's REST API requests; call it from a thread, never from ``loop``'s own."""

    def __init__(self, connection: Connection, session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop):
        self.connection, self.session, self.loop = connection, session, loop

    def get_registered_model(self, name: str) -> RegisteredModel:
        answer = self._call("GET", "registered-models/get", params={"name": name})
        with _reading("registered-models/get"):
            model = answer["registered_model"]
            aliases = {entry["alias"]: str(entry["version"]) for entry in model.get("aliases", [])}
            return RegisteredModel(model["name"], aliases, _tags(model))

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        answer = self._call("GET", "model-versions/get", params={"name": name, "version": str(version)})
        with _reading("model-versions/get"):
            found = answer["model_version"]
            return ModelVersion(found["name"], str(found["version"]), found.get("run_id") or None, _tags(found))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self._call("POST", "registered-models/alias", {"name": name, "alias": alias, "version": str(version)})

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._call("POST", "registered-models/set-tag", {"name": name, "key": key, "value": value})

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self._call("DELETE", "registered-models/delete-tag", {"name": name, "key": key})

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        body = {"name": name, "version": str(version), "key": key, "value": value}
        self._call("POST", "model-versions/set-tag", body)

    def get_run(self, run_id: str) -> Run:
        answer = self._call("GET", "runs/get", params={"run_id": run_id})
        with _reading("runs/get"):
            info = answer["run"]["info"]
            return Run(RunInfo(info["run_id"], str(info["experiment_id"]), info["artifact_uri"]))

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """The run's files under ``path`` and, as MLflow's ``runs:/`` repository lists them, those of the
        model the run logged under that name (MLflow 3 keeps a logged model's files apart from the run's)."""
        answer = self._call("GET", "artifacts/list", params={"run_id": run_id, **({"path": path} if path else {})})
        with _reading("artifacts/list"):
            files = [FileInfo(entry["path"], bool(entry.get("is_dir"))) for entry in answer.get("files", [])]
        name, _, inside = (path or "").partition("/")
        if name and (location := self._logged_model_location(run_id, name)) is not None:
            files += [FileInfo(f"{name}/{entry.path}", entry.is_dir) for entry in self._listing(location, inside)]
        return files

    def model_document(self, name: str, version: str) -> dict:
        """What the version's MLmodel file says of it: ``signature``, ``metadata``, ``example`` (``serving.registry.base``)."""
        answer = self._call("GET", "model-versions/get-download-uri", params={"name": name, "version": str(version)})
        with _reading("model-versions/get-download-uri"):
            location = answer["artifact_uri"]
        return self._document_at(location, f"version {version}")

    def run_model_document(self, run_id: str, artifact_path: str) -> dict:
        """The same for a model a run logged (``runs:/<run_id>/<artifact_path>``)."""
        name, _, inside = artifact_path.partition("/")
        model = self._logged_model_location(run_id, name)
        if model is not None:
            location = model.rstrip("/") + (f"/{inside}" if inside else "")
        else:
            location = self.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + artifact_path
        return self._document_at(location, f"run {run_id}'s model")

    def _logged_model_location(self, run_id: str, name: str) -> str | None:
        """Where the model the run logged as ``name`` keeps its files; None when it logged none by that name."""
        experiment = self.get_run(run_id).info.experiment_id
        body = {"experiment_ids": [experiment], "filter": f"name = '{name}'", "max_results": 100}
        for _ in range(100):  # pages; a run logs a handful of models at most
            answer = self._call("POST", "logged-models/search", body)
            with _reading("logged-models/search"):
                for model in answer.get("models", []):
                    if model["info"].get("source_run_id") == run_id:
                        return model["info"]["artifact_uri"]
                token = answer.get("next_page_token")
            if not token:
                return None
            body["page_token"] = token
        return None

    def _listing(self, location: str, inside: str) -> list[FileInfo]:
        """The files directly under ``location``/``inside``, with paths relative to ``location``."""
        parsed = urlparse(location)
        prefix = f"{inside}/" if inside else ""
        if parsed.scheme == "mlflow-artifacts":
            where = "/".join(part for part in (parsed.path.strip("/"), inside) if part)
            answer = self._call("GET", ARTIFACTS_PREFIX.rstrip("/"), params={"path": where})
            with _reading("mlflow-artifacts/artifacts"):
                return [FileInfo(prefix + e["path"], bool(e.get("is_dir"))) for e in answer.get("files", [])]
        if parsed.scheme in ("", "file"):
            try:
                with os.scandir(Path(unquote(parsed.path)) / inside) as entries:
                    return [FileInfo(prefix + entry.name, entry.is_dir()) for entry in entries]
            except OSError:
                return []
        raise RegistryUnavailable(f"the model files at {parsed.scheme}:// are read only by MLflow's own client")

    def _document_at(self, location: str, what: str) -> dict:
        """Read the MLmodel file under ``location`` where it is: through the server's artifact proxy
        (``mlflow-artifacts:/``, what ``mlflow server --serve-artifacts`` hands out) or at a local
        path, and the input example beside it when the model logged one. Other stores (``s3://``...)
        need their own clients, which only MLflow's side of the stack carries."""
        import yaml  # MLflow's own dependency, for its MLmodel files

        try:
            document = yaml.safe_load(self._model_file(location, "MLmodel", what))
        except yaml.YAMLError:
            raise RegistryUnavailable(f"{what}'s MLmodel file is not YAML") from None
        if not isinstance(document, dict):
            document = {}
        signature, metadata = document.get("signature"), document.get("metadata")
        saved = document.get("saved_input_example_info")
        example = None
        if isinstance(saved, dict) and saved.get("type") == "dataframe" and isinstance(saved.get("artifact_path"), str):
            try:
                example = example_rows(self._model_file(location, saved["artifact_path"], what))
            except (RegistryUnavailable, RegistryApiError):  # no example: readiness falls back to /ping
                example = None
        return {
            "signature": dict(signature) if isinstance(signature, dict) else None,
            "metadata": dict(metadata) if isinstance(metadata, dict) else None,
            "example": example,
        }

    def _model_file(self, location: str, name: str, what: str) -> bytes:
        parsed = urlparse(location)
        if parsed.scheme == "mlflow-artifacts":
            return self._call("GET", ARTIFACTS_PREFIX + quote(parsed.path.strip("/") + "/" + name), raw=True)
        if parsed.scheme in ("", "file"):
            return _local_file(Path(unquote(parsed.path)) / name)
        raise RegistryUnavailable(
            f"{what}'s files are in {parsed.scheme}:// storage, which the proxy reads only through "
            "the tracking server (mlflow server --serve-artifacts)"
        )

    def _call(self, method: str, endpoint: str, body: dict | None = None, params: dict | None = None, raw=False):
        future = asyncio.run_coroutine_threadsafe(self.request(method, endpoint, body, params, raw), self.loop)
        try:
            return future.result(timeout=self.connection.timeout_s + 1)
        except TimeoutError:  # the request's own deadline should have come first
            future.cancel()
            raise RegistryUnavailable(self._late()) from None

    async def request(self, method: str, endpoint: str, body=None, params=None, raw: bool = False) -> dict | bytes:
        """One request: its JSON answer (its bytes when ``raw``), RegistryApiError for an error answer,
        RegistryUnavailable otherwise. ``endpoint`` is under the REST API's prefix unless it starts with ``/``."""
        connection = self.connection
        path = endpoint if endpoint.startswith("/") else API_PREFIX + endpoint
        try:
            async with self.session.request(
                method,
                connection.base_url + path,
                params=params,
                json=body,
                headers=connection.headers,
                ssl=connection.ssl,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=connection.timeout_s),
            ) as response:
                status, answer = response.status, await _read(response)
        except aiohttp.ClientSSLError:
            raise RegistryUnavailable(
                f"tracking server {connection.host}: its TLS certificate was not accepted (see "
                "MLFLOW_TRACKING_SERVER_CERT_PATH and MLFLOW_TRACKING_INSECURE_TLS)"
            ) from None
        except aiohttp.ClientConnectorError:
            raise RegistryUnavailable(f"tracking server unreachable: {connection.host}") from None
        except TimeoutError:
            raise RegistryUnavailable(self._late()) from None
        except aiohttp.ClientError as exc:
            raise RegistryUnavailable(f"tracking server {connection.host} failed: {type(exc).__name__}") from None
        if raw and status == 200:
            return answer
        return _outcome(status, answer, endpoint)

    def _late(self) -> str:
        return f"tracking server {self.connection.host} did not answer within {self.connection.timeout_s:g} s"


async def _read(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(2**16):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise RegistryUnavailable(f"the tracking server's answer is over {MAX_ANSWER_BYTES // 2**20} MiB")
    return bytes(body)


def _outcome(status: int, answer: bytes, endpoint: str) -> dict:
    """The answer's JSON object; an error read by the ``error_code`` MLflow's server puts in its body."""
    try:
        document = json.loads(answer) if answer.strip() else {}
    except ValueError:
        document = None
    if status == 200 and isinstance(document, dict):
        return document
    if status == 401:
        raise RegistryUnavailable(
            "tracking server refused the credentials (401): check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        )
    if status == 403:
        raise RegistryUnavailable(f"permission denied by the tracking server (403) for {endpoint}")
    if isinstance(document, dict) and isinstance(document.get("error_code"), str):
        raise RegistryApiError(document["error_code"], str(document.get("message", ""))[:500])
    if status == 404:
        raise RegistryUnavailable(
            f"the tracking server answered 404 for {endpoint}: is the tracking URI an MLflow server?"
        )
    if status == 200:
        raise RegistryUnavailable(f"the tracking server's answer to {endpoint} is not JSON: is it an MLflow server?")
    raise RegistryUnavailable(f"the tracking server answered {status} for {endpoint}")


def _local_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_ANSWER_BYTES)
    except OSError as exc:
        raise RegistryUnavailable(f"cannot read the model file {path}: {exc.strerror or type(exc).__name__}") from None


@contextlib.contextmanager
def _reading(endpoint: str):
    """An answer of another shape than the registry's is the server's failure, not the proxy's."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError):
        raise RegistryUnavailable(f"the tracking server's answer to {endpoint} is not a registry answer") from None


def _tags(entity: dict) -> dict[str, str]:
    return {tag["key"]: tag.get("value", "") for tag in entity.get("tags", [])}


def document_over_rest(client: RestRegistryClient, model: ModelRef | RunModelRef, version: str) -> dict:
    if isinstance(model, RunModelRef):
        return client.run_model_document(model.run_id, model.artifact_path)
    return client.model_document(model.name, version)


class RestRegistryLookup(RegistryLookup):
    """The operations in a worker thread over ``RestRegistryClient``; one HTTP session per operation."""

    def __init__(self, model: ModelRef, uri: str, env=os.environ):
        super().__init__(model)
        self.uri = uri
        self._env = env
        self._connection: Connection | None = None

    read_document = staticmethod(document_over_rest)

    def _run_blocking(self, function, *args):
        return asyncio.run(self._run(function, *args))

    async def _run(self, function, *args):
        loop = asyncio.get_running_loop()
        if self._connection is None:
            self._connection = Connection.from_env(self.uri, self._env)
        # A session per operation: nothing outlives it, whichever loop runs it (start-up's or the proxy's).
        async with aiohttp.ClientSession(trust_env=True) as session:
            client = RestRegistryClient(self._connection, session, loop)
            try:
                work = loop.run_in_executor(None, reported, function, client, *args)
                answer = await asyncio.wait_for(work, LOOKUP_TIMEOUT_S)
            except TimeoutError:
                raise RegistryUnavailable(f"registry call took over {LOOKUP_TIMEOUT_S:g} s") from None
        return unpacked(answer)
