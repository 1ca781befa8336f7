"""What a user may write for a version or an alias: MLflow's rules, checked before any network call."""

import pytest

from iris_core.refs import Ref, check_alias, parse_ref


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("3", Ref(version="3")),
        ("007", Ref(version="7")),
        (" 12 ", Ref(version="12")),
        ("@champion", Ref(alias="champion")),
        ("@blue-green_2", Ref(alias="blue-green_2")),
    ],
)
def test_version_numbers_and_aliases_parse(text, ref):
    assert parse_ref(text) == ref


@pytest.mark.parametrize(
    "text", ["", "0", "-1", "1.0", "v3", "champion", "@", "@latest", "@v2", "@a b", "@x/y", "@" + "a" * 256]
)
def test_anything_else_is_not_a_ref(text):
    with pytest.raises(ValueError, match="neither a version number nor @alias"):
        parse_ref(text)


@pytest.mark.parametrize("name", ["latest", "LATEST", "v1", "V12", "", "a.b", "a" * 256])
def test_names_mlflow_reserves_or_rejects_are_not_aliases(name):
    with pytest.raises(ValueError, match="is not a usable alias"):
        check_alias(name)
