"""Model URIs given to a step as parameters: checked before MLflow is imported, resolved to a version once."""

from iris_core.errors import NotFound
from iris_core.refs import ModelRef, parse_model_uri
from iris_core.resolver import Resolved, resolve
from steps.common.errors import InvalidParameter, StepError


def check_model_uri(model_uri: str) -> ModelRef:
    """The reference a ``models:/`` URI names, or InvalidParameter (exit 2)."""
    try:
        return parse_model_uri(model_uri)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None


def resolve_model_uri(client, ref: ModelRef) -> Resolved:
    """The version the reference names in the registry right now; a registry that cannot be asked says why."""
    try:
        return resolve(client, ref)
    except NotFound:
        raise StepError(f"no model version found for {ref.uri}") from None
