"""Hypothesis strategies for request bodies a client might send: any JSON, near a protocol's shape."""

from hypothesis import strategies as st


def any_json(
    keys: list[str], max_text: int = 8, max_key: int = 6, max_items: int = 5, max_leaves: int = 30
) -> st.SearchStrategy:
    """Any JSON value whose objects' keys are often one of ``keys``, so that a document comes close to
    what a protocol accepts as often as it strays from it."""
    return st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=max_text),
        lambda children: (
            st.lists(children, max_size=max_items)
            | st.dictionaries(st.sampled_from(keys) | st.text(max_size=max_key), children, max_size=max_items)
        ),
        max_leaves=max_leaves,
    )
