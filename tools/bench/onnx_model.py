"""A stored model's compiled form (model.onnx) in ONNX Runtime, as the peers that run it load it.

The minimal BentoML service and FastAPI + ONNX Runtime run the very file our service serves,
with the same session settings (one intra-op thread per call: a server's parallelism is its
workers), so that the comparison measures the servers, not the runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# The compiled model a peer serves: set by the benchmark (tools/bench/servers.py).
ONNX_PATH_ENV = "IRIS_BENCH_ONNX_MODEL"
PROBABILITIES = "probabilities"


class OnnxClassifier:
    """`predict_proba` over an ONNX Runtime session (float32 input, probabilities output)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        names = [output.name for output in self.session.get_outputs()]
        self.output_name = PROBABILITIES if PROBABILITIES in names else names[-1]

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.asarray(rows, dtype=np.float32)}
        return self.session.run([self.output_name], feed)[0]


def from_environment() -> OnnxClassifier:
    return OnnxClassifier(Path(os.environ[ONNX_PATH_ENV]))
