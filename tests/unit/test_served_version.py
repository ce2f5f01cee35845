"""`make models` asks a running service which model it uses, and copes with none."""

from __future__ import annotations

from iris_pipeline.served_version import ask_service, parse_model_info
from tools.local_server import free_port

METRICS = """# HELP iris_model_info The model versions this service serves
# TYPE iris_model_info gauge
iris_model_info{role="champion",tag="iris-classifier:abc",version="2"} 1.0
iris_model_info{role="challenger",tag="iris-classifier:def",version="3"} 1.0
iris_model_info{role="champion",tag="iris-classifier:old",version="1"} 0.0
iris_model_info_created{tag="iris-classifier:abc"} 1.7e9
other_metric{tag="iris-classifier:zzz"} 1.0
"""


def test_the_info_metric_names_the_served_tags_and_roles() -> None:
    assert parse_model_info(METRICS, "iris-classifier") == {
        "iris-classifier:abc": "champion",
        "iris-classifier:def": "challenger",
    }
    assert parse_model_info(METRICS, "iris-lr") == {}
    assert parse_model_info("", "iris-classifier") == {}


def test_no_running_service_is_reported_not_raised() -> None:
    served = ask_service(f"http://127.0.0.1:{free_port()}", "iris-classifier", timeout=1)
    assert not served.answered and served.tags == {}
    assert served.summary().startswith("no running service at http://127.0.0.1:")
