"""POST /feedback's parts: the join of a label with the stored prediction, its refusals, who
may name a prediction by which id, live quality read from the store, and the live quality
window. Predictions are recorded by the real PredictionRecordMiddleware and RecordWriter
around a small ASGI app into a real SQLite store, so the join reads what the service writes
(the store's own contract: tests/unit/test_record_store.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from iris_service.http.prediction_records import PredictionRecordMiddleware
from iris_service.http.request_ids import key_id as id_of_key
from iris_service.http.request_ids import set_api_key_id
from iris_service.monitoring.live_quality import Label, LiveQuality, summarise
from iris_service.names import CLASS_NAMES
from iris_service.records.feedback import (
    FeedbackDesk,
    FeedbackRefused,
    LabelFollower,
    join,
    parse_address,
)
from iris_service.records.store import RecordStore
from iris_service.records.writer import RecordWriter
from tests.support import SETOSA, VERSICOLOR, VIRGINICA

pytestmark = pytest.mark.timeout(60)
TAG = "iris-classifier:abc"


def _answer(flower: dict[str, float]) -> dict[str, Any]:
    name = "setosa" if flower["petal_length"] < 2.5 else "virginica"  # a crude model
    return {"class_id": CLASS_NAMES.index(name), "class_name": name, "model_tag": TAG}


def predict(
    log: RecordWriter,
    path: str,
    body: dict[str, Any],
    client_id: str | None = None,
    key_id: str | None = None,
) -> str:
    """One prediction through the real PredictionRecordMiddleware, sent with the API key of id
    `key_id` (None: keys off); returns the server id."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        request = json.loads((await receive())["body"])
        if path == "/predict":
            answer: dict[str, Any] = _answer(request)
        else:
            answer = {"predictions": [_answer(f) for f in request["flowers"]], "model_tag": TAG}
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    headers = [(b"content-type", b"application/json")]
    if client_id is not None:
        headers.append((b"x-request-id", client_id.encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    if key_id is not None:
        set_api_key_id(scope, key_id)  # what ApiKeyMiddleware does for an accepted key
    sent = json.dumps(body).encode()

    async def receive() -> dict:
        return {"type": "http.request", "body": sent, "more_body": False}

    async def send(_: dict) -> None:
        return None

    asyncio.run(PredictionRecordMiddleware(app, log)(scope, receive, send))
    return scope["iris.server_request_id"]


@pytest.fixture
def log(store: RecordStore) -> RecordWriter:
    """The writer the middleware hands records to (its thread starts with the first one)."""
    writer = RecordWriter(store)
    yield writer
    writer.close()


def _desk(log: RecordWriter, tmp_path: Path) -> FeedbackDesk:
    return FeedbackDesk(log.store, flush_predictions=log.flush, wait_s=0.2)


def _refusal(
    desk: FeedbackDesk, labels: list[tuple[str, str]], key_id: str | None = None
) -> FeedbackRefused:
    with pytest.raises(FeedbackRefused) as caught:
        desk.label(labels, key_id)
    return caught.value


# --- addresses and the join ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "request_id", "index"),
    [("abc", "abc", None), ("abc/0", "abc", 0), ("a.b_c-9/12", "a.b_c-9", 12)],
)
def test_addresses_name_a_request_and_maybe_a_flower(text: str, request_id: str, index) -> None:
    address = parse_address(text)
    assert (address.request_id, address.index) == (request_id, index)
    assert str(address) == text


@pytest.mark.parametrize("text", ["", "a b", "abc/", "abc/x", "abc/1/2", "x" * 65, "é"])
def test_malformed_addresses_are_refused_with_400(text: str) -> None:
    with pytest.raises(FeedbackRefused) as caught:
        parse_address(text)
    assert caught.value.status == 400 and caught.value.code == "validation_error"


def _batch_record() -> dict[str, Any]:
    return {
        "ts": 100.0,
        "endpoint": "/predict_batch",
        "inputs": {"flowers": [SETOSA, VIRGINICA]},
        "outputs": {"predictions": [_answer(SETOSA), _answer(VIRGINICA)], "model_tag": TAG},
    }


def test_the_join_keeps_inputs_answer_model_and_times() -> None:
    record = join(parse_address("c-1/1"), "f00d", "versicolor", _batch_record(), now=160.0)
    assert record["key"] == "f00d/1" and record["request_id"] == "c-1/1"
    assert record["features"] == VIRGINICA
    assert (record["predicted"], record["class_name"], record["correct"]) == (
        "virginica",
        "versicolor",
        False,
    )
    assert record["model_tag"] == TAG
    assert record["ts"] - record["predicted_at"] == 60.0


@pytest.mark.parametrize(
    ("address", "status", "words"),
    [("c-1", 400, "label each one as c-1/<index>"), ("c-1/2", 404, "indexes 0 to 1")],
)
def test_a_batch_needs_a_valid_flower_index(address: str, status: int, words: str) -> None:
    with pytest.raises(FeedbackRefused) as caught:
        join(parse_address(address), "f00d", "setosa", _batch_record(), now=1.0)
    assert caught.value.status == status and words in caught.value.detail


def test_predictions_of_the_protocol_routes_are_not_labellable() -> None:
    record = {"ts": 1.0, "endpoint": "/invocations", "inputs": "a,b", "outputs": {}}
    with pytest.raises(FeedbackRefused) as caught:
        join(parse_address("x"), "x", "setosa", record, now=2.0)
    assert (caught.value.status, caught.value.code) == (422, "not_labellable")


# --- the desk over a real prediction log -----------------------------------------------------


def test_a_label_joins_the_logged_prediction_and_counts_once(
    log: RecordWriter, tmp_path: Path
) -> None:
    server_id = predict(log, "/predict", VERSICOLOR)
    desk = _desk(log, tmp_path)
    (record,) = desk.label([(server_id, "versicolor")])
    assert record["features"] == VERSICOLOR and record["predicted"] == "virginica"
    assert not record["correct"]
    again = _refusal(desk, [(server_id, "versicolor")])
    assert (again.status, again.code) == (409, "already_labelled")
    assert log.store.count_labels() == 1


def test_a_client_id_works_until_it_is_ambiguous(log: RecordWriter, tmp_path: Path) -> None:
    predict(log, "/predict_batch", {"flowers": [SETOSA, VERSICOLOR]}, client_id="order-7")
    desk = _desk(log, tmp_path)
    accepted = desk.label([("order-7/0", "setosa"), ("order-7/1", "versicolor")])
    assert [r["correct"] for r in accepted] == [True, False]
    second = predict(log, "/predict", SETOSA, client_id="order-7")
    refused = _refusal(desk, [("order-7", "setosa")])
    assert (refused.status, refused.code) == (409, "ambiguous_request_id")
    assert "X-Server-Request-Id" in refused.detail
    assert desk.label([(second, "setosa")])[0]["correct"]  # the server id still works


def test_a_client_id_another_worker_has_not_stored_yet_still_makes_the_label_ambiguous(
    log: RecordWriter,
) -> None:
    """Two API workers: this one stored a prediction with the client's id; the other answered
    a second one with the same id before the label came and writes it a writer interval
    later. The desk settles a client's id before naming a prediction: 409, not the first."""
    first = predict(log, "/predict", SETOSA, client_id="twice")
    log.flush()
    other_worker = RecordWriter(log.store, interval_s=0.3)
    try:
        predict(other_worker, "/predict", VIRGINICA, client_id="twice")
        desk = FeedbackDesk(log.store, flush_predictions=log.flush, wait_s=0.2, settle_s=2.0)
        refused = _refusal(desk, [("twice", "setosa")])
        assert (refused.status, refused.code) == (409, "ambiguous_request_id")
        assert desk.label([(first, "setosa")])[0]["correct"]  # a server id is not settled
    finally:
        other_worker.close()


def test_a_client_id_names_only_the_predictions_of_the_key_that_sends_the_label(
    log: RecordWriter, tmp_path: Path
) -> None:
    """With API keys on, client B cannot label client A's prediction by A's X-Request-ID
    (anyone can send the same id): it is unknown to B, and B's own prediction under the
    same id is what B labels. The server id, known only from the answer, works with any key."""
    alice, bob = id_of_key(b"alice-key-0123456789"), id_of_key(b"bob-key-9876543210ab")
    alices = predict(log, "/predict", SETOSA, client_id="order-1", key_id=alice)
    desk = _desk(log, tmp_path)
    refused = _refusal(desk, [("order-1", "virginica")], key_id=bob)
    assert (refused.status, refused.code) == (404, "unknown_request_id")
    assert _refusal(desk, [("order-1", "setosa")]).status == 404  # nor without a key
    bobs = predict(log, "/predict", VERSICOLOR, client_id="order-1", key_id=bob)
    (bob_label,) = desk.label([("order-1", "versicolor")], key_id=bob)
    assert bob_label["server_request_id"] == bobs  # not ambiguous: Alice's is not Bob's
    (alice_label,) = desk.label([("order-1", "setosa")], key_id=alice)
    assert alice_label["server_request_id"] == alices
    other = predict(log, "/predict", VIRGINICA, key_id=alice)
    assert desk.label([(other, "virginica")], key_id=bob)[0]["correct"]


def test_the_same_flower_by_client_id_and_by_server_id_is_one_label(
    log: RecordWriter, tmp_path: Path
) -> None:
    server_id = predict(log, "/predict_batch", {"flowers": [SETOSA]}, client_id="c-9")
    desk = _desk(log, tmp_path)
    desk.label([("c-9/0", "setosa")])
    assert _refusal(desk, [(f"{server_id}/0", "setosa")]).code == "already_labelled"


def test_one_bad_label_refuses_the_whole_request(log: RecordWriter, tmp_path: Path) -> None:
    good = predict(log, "/predict", SETOSA)
    desk = _desk(log, tmp_path)
    assert _refusal(desk, [(good, "setosa"), ("never-made", "setosa")]).status == 404
    assert _refusal(desk, [(good, "setosa"), (good, "virginica")]).code == "already_labelled"
    assert log.store.count_labels() == 0
    assert len(desk.label([(good, "setosa")])) == 1


def test_an_unknown_id_is_404_after_a_bounded_wait(log: RecordWriter, tmp_path: Path) -> None:
    refused = _refusal(_desk(log, tmp_path), [("0123abcd", "setosa")])
    assert (refused.status, refused.code) == (404, "unknown_request_id")


def test_a_label_sent_before_its_record_is_written_is_still_joined(
    log: RecordWriter, tmp_path: Path
) -> None:
    """The answer leaves before the background writer writes the record."""
    desk = _desk(log, tmp_path)
    server_id = predict(log, "/predict", SETOSA)  # queued; the desk flushes and looks again
    assert desk.label([(server_id, "setosa")])[0]["correct"]


# --- live quality from the store ------------------------------------------------------------


def _record(key: str, model_tag: str = TAG, predicted: str = "setosa", true: str = "setosa"):
    return {
        "ts": 10.0,
        "key": key,
        "request_id": key,
        "server_request_id": key,
        "index": None,
        "class_name": true,
        "predicted": predicted,
        "correct": predicted == true,
        "model_tag": model_tag,
        "predicted_at": 4.0,
        "endpoint": "/predict",
        "features": None,
    }


def test_a_starting_worker_reads_its_windows_not_the_history(store: RecordStore) -> None:
    """With 3,000 labels stored, a follower starting with a 40-label budget reads 40 (and
    says so in iris_records_read_at_start); then only what is added."""
    from prometheus_client import REGISTRY

    store.add_labels([_record(f"old-{n}", predicted="virginica") for n in range(2_960)])
    store.add_labels([_record(f"new-{n}") for n in range(40)])
    quality = LiveQuality(window=40, class_names=CLASS_NAMES)
    follower = LabelFollower(store, quality, start_rows=40)
    assert follower.catch_up_now() == 40
    assert REGISTRY.get_sample_value("iris_records_read_at_start") == 40
    assert quality.summary(TAG).accuracy == 1.0  # the newest 40, all right
    store.add_labels([_record("latest", predicted="virginica")])
    assert follower.catch_up_now() == 1
    assert quality.summary(TAG).accuracy == pytest.approx(39 / 40)


def test_labels_taken_by_another_worker_reach_this_one(log: RecordWriter, tmp_path: Path) -> None:
    other_desk = _desk(log, tmp_path)  # another API worker (or replica) of the same store
    quality = LiveQuality(window=10, class_names=CLASS_NAMES)
    follower = LabelFollower(log.store, quality, start_rows=10)
    follower.catch_up_now()
    server_id = predict(log, "/predict", VERSICOLOR)
    other_desk.label([(server_id, "versicolor")])
    assert follower.catch_up_now() == 1
    assert quality.summary(TAG).accuracy == 0.0  # the crude model said virginica


# --- the live quality window -----------------------------------------------------------------


def test_accuracy_recall_and_delay_of_a_window() -> None:
    labels = [
        Label("setosa", "setosa", 1.0),
        Label("virginica", "versicolor", 3.0),
        Label("versicolor", "versicolor", 5.0),
        Label("virginica", "virginica", 7.0),
    ]
    summary = summarise(labels, CLASS_NAMES)
    assert summary is not None
    assert summary.accuracy == 0.75 and summary.labelled == 4
    assert summary.recall == {"setosa": 1.0, "versicolor": 0.5, "virginica": 1.0}
    assert summary.median_delay_s == 4.0
    assert summarise([], CLASS_NAMES) is None


def test_the_window_slides_and_keeps_model_versions_apart() -> None:
    quality = LiveQuality(window=3, class_names=CLASS_NAMES)
    for _ in range(3):
        quality.add(_record("x", predicted="virginica", true="versicolor"))
    quality.add(_record("y", model_tag="iris-classifier:new"))
    assert quality.summary(TAG).accuracy == 0.0
    for _ in range(2):
        quality.add(_record("x"))  # two right answers push two wrong ones out
    assert quality.summary(TAG).accuracy == pytest.approx(2 / 3)
    assert quality.summary(TAG).labelled == 3
    assert quality.report()["iris-classifier:new"]["accuracy"] == 1.0


def test_publishing_sets_the_gauges_of_every_model_version() -> None:
    from prometheus_client import REGISTRY

    quality = LiveQuality(window=10, class_names=CLASS_NAMES)
    quality.add(
        _record(
            "a", model_tag="iris-classifier:published", predicted="virginica", true="versicolor"
        )
    )
    quality.add(_record("b", model_tag="iris-classifier:published"))
    quality.publish()
    labels = {"model_version": "iris-classifier:published"}
    assert REGISTRY.get_sample_value("iris_live_accuracy", labels) == 0.5
    assert REGISTRY.get_sample_value("iris_live_labelled", labels) == 2
    assert REGISTRY.get_sample_value("iris_live_label_delay_seconds", labels) == 6.0
    recall = {**labels, "class_name": "versicolor"}
    assert REGISTRY.get_sample_value("iris_live_recall", recall) == 0.0
