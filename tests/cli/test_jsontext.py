"""cli/jsontext.py writes and reads exactly what the json package does."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisiond.cli import jsontext

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20)


@given(documents)
def test_dumps_is_json_dumps(value: object) -> None:
    assert jsontext.dumps(value) == json.dumps(value)
    assert jsontext.dumps(value, indent=2) == json.dumps(value, indent=2)


@given(documents)
def test_loads_is_json_loads(value: object) -> None:
    text = json.dumps(value, indent=2)
    assert jsontext.dumps(jsontext.loads(text)) == jsontext.dumps(json.loads(text))
    assert jsontext.loads(text.encode()) == json.loads(text) or text.count("NaN")


def test_keys_tuples_and_unknown_types_as_json_has_them() -> None:
    value = {1: (1, 2), False: None, 2.5: [], None: {}}
    assert jsontext.dumps(value, indent=2) == json.dumps(value, indent=2)
    with pytest.raises(TypeError):
        jsontext.dumps({"a": object()})


@pytest.mark.parametrize("text", ["", "{", "[1,]", "{} x", "nul", '"\x01"'])
def test_malformed_documents_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsontext.loads(text)
