"""The fast accept path of /predict_batch agrees with Pydantic on every body it accepts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from iris_service.http.batch_bodies import CheckedFlowers, fast_flowers
from iris_service.http.schemas import (
    SETOSA_EXAMPLE,
    VIRGINICA_EXAMPLE,
    IrisBatch,
    IrisFlower,
    flower_rows,
)
from iris_service.names import FEATURE_NAMES
from iris_service.settings import settings

FLOWER = json.dumps(SETOSA_EXAMPLE)


def _pydantic_rows(body: bytes) -> np.ndarray | None:
    """What Pydantic alone makes of a body: its rows, or None when it refuses it."""
    try:
        batch = IrisBatch.__pydantic_validator__.validate_json(body)
    except ValidationError:
        return None
    return np.array([[flower[name] for name in FEATURE_NAMES] for flower in batch.flowers])


EDGE_BODIES = [
    '{"flowers":[' + FLOWER + "]}",
    '{"flowers":[{"sepal_length":5,"sepal_width":3,"petal_length":1,"petal_width":1}]}',
    '{"flowers":[{"sepal_length":5.1,"sepal_length":6.1,"sepal_width":3.5,'
    '"petal_length":1.4,"petal_width":0.2}]}',  # a repeated key: the last one counts
    '{"flowers":[],"flowers":[' + FLOWER + "]}",
    ' \n{"flowers" : [ ' + FLOWER + " ] }\n",
    '{"flowers":[{"sepal\\u005flength":5.1,"sepal_width":3.5,"petal_length":1.4,'
    '"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":20,"sepal_width":15,"petal_length":20,"petal_width":10}]}',
    '{"flowers":[{"sepal_length":5.10000000000000000000001,"sepal_width":3.5,'
    '"petal_length":1.4,"petal_width":0.2}]}',
    # refused by both
    '{"flowers":[]}',
    "{}",
    "[]",
    "null",
    '{"flowers":[' + FLOWER + '],"extra":1}',
    '{"flowers":[{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4}]}',
    '{"flowers":[{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,'
    '"petal_width":0.2,"colour":"blue"}]}',
    '{"flowers":[{"sepal_length":true,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":"5.1","sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":null,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":-0.0,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":0,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":20.000001,"sepal_width":3.5,"petal_length":1.4,'
    '"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":1e999,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":NaN,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}',
    '{"flowers":[{"sepal_length":123456789012345678901234567890,"sepal_width":3.5,'
    '"petal_length":1.4,"petal_width":0.2}]}',
    '{"flowers":[' + FLOWER + "]}x",
    '\ufeff{"flowers":[' + FLOWER + "]}",
    '{"flowers":[' + FLOWER + "]",
    '{"flowers":' + FLOWER + "}",
    '{"flowers":[[5.1,3.5,1.4,0.2]]}',
    '{"flowers":[' + ",".join([FLOWER] * (settings.max_batch_flowers + 1)) + "]}",
]


@pytest.mark.parametrize("body", EDGE_BODIES)
def test_the_fast_path_accepts_only_what_pydantic_accepts_with_the_same_rows(body: str) -> None:
    raw = body.encode()
    expected = _pydantic_rows(raw)
    fast = fast_flowers(raw)
    if fast is None:
        return  # Pydantic judges it, as before the fast path existed
    assert expected is not None, "the fast path accepted a body Pydantic refuses"
    assert np.array_equal(fast.rows, expected)


def test_every_edge_case_is_judged_by_at_least_one_path() -> None:
    """The corpus holds both kinds: bodies the fast path takes and bodies Pydantic refuses."""
    outcomes = {
        (fast_flowers(b.encode()) is None, _pydantic_rows(b.encode()) is None) for b in EDGE_BODIES
    }
    assert (False, False) in outcomes and (True, True) in outcomes
    assert (False, True) not in outcomes


def test_valid_batches_take_the_fast_path_with_exact_rows() -> None:
    rng = np.random.default_rng(11)
    for count in (1, 7, settings.max_batch_flowers):
        rows = rng.uniform(0.1, 9.9, size=(count, 4)).round(rng.integers(0, 17))
        body = json.dumps(
            {"flowers": [dict(zip(FEATURE_NAMES, row, strict=True)) for row in rows.tolist()]}
        )
        batch = IrisBatch.model_validate_json(body)
        assert isinstance(batch.flowers, CheckedFlowers)
        assert np.array_equal(flower_rows(batch.flowers), rows)
        assert np.array_equal(flower_rows(batch.flowers), _pydantic_rows(body.encode()))


def test_refused_bodies_get_pydantics_own_error() -> None:
    body = '{"flowers":[{"sepal_length":0,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}'
    with pytest.raises(ValidationError) as refused:
        IrisBatch.model_validate_json(body)
    assert refused.value.errors()[0]["loc"] == ("flowers", 0, "sepal_length")


def test_checked_flowers_read_as_the_flower_dicts_pydantic_would_give() -> None:
    flowers = [IrisFlower(**SETOSA_EXAMPLE), IrisFlower(**VIRGINICA_EXAMPLE)]  # type: ignore[typeddict-item]
    checked = fast_flowers(json.dumps({"flowers": flowers}).encode())
    assert checked is not None
    assert len(checked) == 2
    assert list(checked) == flowers
    assert checked[1] == flowers[1]
    assert checked[-1:] == flowers[-1:]
