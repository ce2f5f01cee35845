"""Seeded property tests of the strict JSON reader every protocol parser uses (V2, MLflow
scoring): any JSON document sent as UTF-8 comes back equal; anything else is UnreadableJson
with a reason, never another exception and never a loosely decoded value."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iris_service.protocols.json_bodies import UnreadableJson, strict_json

# Finite numbers only: NaN and the infinities are not JSON numbers (RFC 8259).
documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children),
    max_leaves=25,
)


@given(document=documents, ensure_ascii=st.booleans(), indent=st.none() | st.integers(0, 3))
def test_every_json_document_sent_as_utf8_reads_back_equal(document, ensure_ascii, indent) -> None:
    raw = json.dumps(document, ensure_ascii=ensure_ascii, indent=indent).encode("utf-8")
    assert strict_json(raw) == document


@given(document=documents, constant=st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_a_non_finite_constant_anywhere_is_refused(document, constant: str) -> None:
    raw = json.dumps([document, math.nan]).replace("NaN", constant).encode()
    with pytest.raises(UnreadableJson, match="not a JSON number"):
        strict_json(raw)


@given(prefix=st.text(max_size=20), bad=st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
def test_bytes_that_are_not_utf8_are_refused_with_the_offset(prefix: str, bad: bytes) -> None:
    head = json.dumps(prefix).encode()[:-1]  # inside the string, before its closing quote
    with pytest.raises(UnreadableJson, match=rf"is not UTF-8 \(byte {len(head)}\)"):
        strict_json(head + bad + b'"')


@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_read_or_are_refused_with_a_reason(raw: bytes) -> None:
    try:
        document = strict_json(raw)
    except UnreadableJson as refused:
        assert str(refused)  # the reason completes "the body ..."
    else:  # what reads back is exactly what json reads from the UTF-8 text
        assert document == json.loads(raw.decode("utf-8"))
