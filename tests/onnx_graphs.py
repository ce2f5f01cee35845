"""ONNX graphs for the equivalence tests: a real compiled model with its probabilities
deliberately altered, and a tiny graph whose answers a test chooses exactly."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from iris_pipeline.compiling import (
    INPUT_NAME,
    LABEL_OUTPUT,
    PROBABILITIES_OUTPUT,
    TARGET_OPSET,
    CompiledModel,
)
from iris_service.names import CLASS_NAMES, FEATURE_NAMES


def tampered(compiled: CompiledModel, added: tuple[float, ...]) -> CompiledModel:
    """`compiled` with `added[i]` added to every row's probability of class i."""
    graph_model = onnx.load_from_string(compiled.onnx_bytes)
    graph = graph_model.graph
    raw = f"{PROBABILITIES_OUTPUT}_before_tampering"
    for node in graph.node:
        node.output[:] = [raw if name == PROBABILITIES_OUTPUT else name for name in node.output]
    graph.initializer.append(
        numpy_helper.from_array(np.asarray([added], dtype=np.float32), "tampering")
    )
    graph.node.append(helper.make_node("Add", [raw, "tampering"], [PROBABILITIES_OUTPUT]))
    onnx.checker.check_model(graph_model)
    return CompiledModel(graph_model.SerializeToString())


def first_columns_graph() -> CompiledModel:
    """A model whose probabilities are the first len(CLASS_NAMES) input columns, as float32."""
    classes = len(CLASS_NAMES)
    constants = {
        "starts": [0],
        "ends": [classes],
        "axes": [1],
    }
    graph = helper.make_graph(
        [
            helper.make_node(
                "Slice", [INPUT_NAME, "starts", "ends", "axes"], [PROBABILITIES_OUTPUT]
            ),
            helper.make_node("ArgMax", [PROBABILITIES_OUTPUT], [LABEL_OUTPUT], axis=1, keepdims=0),
        ],
        "first_columns",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, len(FEATURE_NAMES)])],
        [
            helper.make_tensor_value_info(LABEL_OUTPUT, TensorProto.INT64, [None]),
            helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, [None, classes]),
        ],
        [
            numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)
            for name, value in constants.items()
        ],
    )
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET)])
    onnx.checker.check_model(graph_model)
    return CompiledModel(graph_model.SerializeToString())


class FirstColumnsModel:
    """A scikit-learn-shaped model answering the first input columns plus `nudge` on class
    1: against first_columns_graph, its answers differ by exactly `nudge` there."""

    classes_ = np.arange(len(CLASS_NAMES))

    def __init__(self, nudge: float) -> None:
        self.nudge = nudge

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(rows, dtype=np.float64)[:, : len(CLASS_NAMES)].copy()
        probabilities[:, 1] += self.nudge
        return probabilities
