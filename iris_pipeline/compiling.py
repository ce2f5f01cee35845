"""Compile a fitted candidate to ONNX and check that it answers like the scikit-learn model.

The service serves ONNX Runtime sessions, never the scikit-learn pickle, so what is judged,
registered and promoted must be the compiled model. Each candidate is converted with
skl2onnx when it is trained, with float32 input (what the service feeds; with float64
input some families do not convert or differ) and `zipmap` off, so the probabilities come
out as one float32 tensor [rows, classes] in the model's class order, which must be
CLASS_NAMES order (classes 0, 1, 2).

Equivalence, checked on every row of the data the pipeline holds (training and test split,
gate set):

- every probability within MAX_ABS_DIFF of scikit-learn's (float64 rows for scikit-learn,
  the same rows as float32 for ONNX Runtime, as the service casts them);
- the same class (highest probability) on every row, except rows whose two highest
  scikit-learn probabilities are within TIE_MARGIN: there the class is a coin toss that any
  rounding may flip. The probability bound still holds on those rows.

A candidate that fails is left out of the choice of the winner (train.py); a registered
version that is not equivalent is never promoted (lifecycle.py, gate.compiled_check).

Nothing here talks to MLflow or BentoML.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from iris_service.errors import first_line
from iris_service.names import CLASS_NAMES

if TYPE_CHECKING:
    import onnxruntime

    from .training import CandidateResult, Dataset

# An opset that every onnxruntime release since 1.14 runs, so the served runtime may be
# older than the converter; skl2onnx 1.20 converts all four families at it.
TARGET_OPSET = 18
INPUT_NAME = "X"  # skl2onnx names the input of a numpy sample "X"
PROBABILITIES_OUTPUT = "probabilities"
LABEL_OUTPUT = "label"
MAX_ABS_DIFF = 1e-5
TIE_MARGIN = 1e-6
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class Equivalence:
    """Does the ONNX model answer like the scikit-learn model? `reason` says why not."""

    passed: bool
    max_abs_diff: float  # NaN when nothing could be compared (conversion or run failed)
    rows: int
    rows_excepted: int  # near ties, left out of the class comparison only
    reason: str = ""

    def as_metadata(self) -> dict[str, Any]:
        """What the BentoML model's metadata records (`onnx_equivalence`)."""
        return {"passed": self.passed, "max_abs_diff": self.max_abs_diff, "rows": self.rows}

    def describe(self) -> str:
        if self.passed:
            return (
                f"equivalent: max |dp| {self.max_abs_diff:.1e} <= {MAX_ABS_DIFF:.0e}, same class "
                f"on {self.rows - self.rows_excepted} rows ({self.rows_excepted} near ties "
                f"excepted) of {self.rows}"
            )
        return f"NOT equivalent: {self.reason}"


@dataclass(frozen=True)
class CompiledModel:
    """The serialized ONNX model and the names the service needs to run it."""

    onnx_bytes: bytes
    input_name: str = INPUT_NAME
    probabilities_output: str = PROBABILITIES_OUTPUT
    opset: int = TARGET_OPSET

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx_bytes).hexdigest()


@dataclass(frozen=True)
class Compilation:
    """A candidate's compiled model (None when conversion failed) and its equivalence."""

    compiled: CompiledModel | None
    equivalence: Equivalence

    @property
    def servable(self) -> bool:
        return self.compiled is not None and self.equivalence.passed


class OnnxPredictor:
    """An ONNX Runtime session with scikit-learn's `predict_proba`/`predict` shape, one
    intra-op thread (as a serving worker runs it), so the gate and the latency measure the
    model the service runs."""

    def __init__(self, compiled: CompiledModel) -> None:
        self.compiled = compiled
        self.session = inference_session(compiled.onnx_bytes)

    def predict_proba(self, rows: Any) -> np.ndarray:
        features = np.asarray(rows, dtype=np.float32)
        return self.session.run(
            [self.compiled.probabilities_output], {self.compiled.input_name: features}
        )[0]

    def predict(self, rows: Any) -> np.ndarray:
        return np.argmax(self.predict_proba(rows), axis=1)


def inference_session(onnx_bytes: bytes) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def convert(model: Any, sample: np.ndarray) -> CompiledModel:
    """The ONNX form of a fitted scikit-learn model (skl2onnx, float32 input, no zipmap)."""
    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        # skl2onnx reads SVC's `probA_`/`probB_`, which scikit-learn 1.9 marks deprecated
        # (FutureWarning) although the calibrated SVM candidate never uses them.
        warnings.filterwarnings("ignore", message="Attribute `prob[AB]_` was deprecated")
        onnx_model = to_onnx(
            model,
            np.asarray(sample[:1], dtype=np.float32),
            options={id(model): {"zipmap": False}},
            target_opset=TARGET_OPSET,
        )
    inputs = [item.name for item in onnx_model.graph.input]
    outputs = [item.name for item in onnx_model.graph.output]
    if inputs != [INPUT_NAME] or PROBABILITIES_OUTPUT not in outputs:
        raise ValueError(f"unexpected ONNX signature: inputs {inputs}, outputs {outputs}")
    return CompiledModel(onnx_model.SerializeToString())


def check_equivalence(model: Any, compiled: CompiledModel, rows: np.ndarray) -> Equivalence:
    """Compare the ONNX model's answers with scikit-learn's on `rows` (module doc)."""
    rows = np.asarray(rows, dtype=np.float64)
    count = len(rows)
    classes = [int(c) for c in getattr(model, "classes_", ())]
    if classes != list(range(len(CLASS_NAMES))):
        return _failed(count, f"the model's classes are {classes}, not 0..{len(CLASS_NAMES) - 1}")
    expected = np.asarray(model.predict_proba(rows), dtype=np.float64)
    try:
        answered = np.asarray(OnnxPredictor(compiled).predict_proba(rows), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - onnxruntime has its own error types
        return _failed(count, f"ONNX Runtime cannot run it ({type(exc).__name__}: {_line(exc)})")
    if answered.shape != expected.shape:
        return _failed(
            count, f"probabilities of shape {answered.shape}, scikit-learn's {expected.shape}"
        )
    difference = float(np.max(np.abs(answered - expected))) if count else 0.0
    top_two = np.sort(expected, axis=1)[:, -2:]
    near_tie = (top_two[:, 1] - top_two[:, 0]) <= TIE_MARGIN
    flipped = (np.argmax(answered, axis=1) != np.argmax(expected, axis=1)) & ~near_tie
    excepted = int(np.count_nonzero(near_tie))
    reasons = []
    if not difference <= MAX_ABS_DIFF:  # NaN fails too
        worst = int(np.argmax(np.max(np.abs(answered - expected), axis=1)))
        reasons.append(f"max |dp| {difference:.2e} > {MAX_ABS_DIFF:.0e} (row {worst} of {count})")
    if flipped.any():
        reasons.append(f"another class on {int(np.count_nonzero(flipped))} of {count} rows")
    return Equivalence(not reasons, difference, count, excepted, "; ".join(reasons))


def compile_model(model: Any, rows: np.ndarray) -> Compilation:
    """Convert `model` and check it on `rows`; a conversion error is a failed check."""
    try:
        compiled = convert(model, rows)
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises many types
        reason = f"skl2onnx cannot convert it ({type(exc).__name__}: {_line(exc)})"
        return Compilation(None, _failed(len(rows), reason))
    return Compilation(compiled, check_equivalence(model, compiled, rows))


def equivalence_rows(data: Dataset) -> np.ndarray:
    """Every row the pipeline holds: the training and test split and the gate set."""
    return np.vstack([data.x_train.to_numpy(), data.x_test.to_numpy(), data.x_gate.to_numpy()])


def compile_candidate(result: CandidateResult, data: Dataset) -> Compilation:
    """Compile a trained candidate, check it, and record in its metrics the equivalence and
    the single-row latency of what would serve: `predict_latency_ms` is ONNX Runtime's
    (NaN when there is no servable ONNX model), beside `sklearn_predict_latency_ms`."""
    from .training import single_row_latency_ms

    compilation = compile_model(result.model, equivalence_rows(data))
    result.compilation = compilation
    equivalence = compilation.equivalence
    latency = math.nan
    if compilation.compiled is not None and equivalence.passed:
        row = data.x_test.to_numpy()[:1]
        latency = single_row_latency_ms(OnnxPredictor(compilation.compiled), row)
    result.metrics.update(
        {
            "predict_latency_ms": latency,
            "onnx_max_abs_diff": equivalence.max_abs_diff,
            "onnx_rows_checked": float(equivalence.rows),
            "onnx_rows_excepted": float(equivalence.rows_excepted),
        }
    )
    return compilation


class NoServableCandidateError(RuntimeError):
    """Every candidate failed to compile to an equivalent ONNX model."""


def servable_candidates(results: list[CandidateResult]) -> list[CandidateResult]:
    """The candidates that may be chosen: compiled and equivalent. None: one clear error."""
    servable = [r for r in results if r.compilation is not None and r.compilation.servable]
    if servable:
        return servable
    reasons = "; ".join(
        f"{r.family}: {r.compilation.equivalence.reason if r.compilation else 'not compiled'}"
        for r in results
    )
    raise NoServableCandidateError(
        f"no candidate compiles to an ONNX model equivalent to its scikit-learn model ({reasons})"
    )


def _failed(rows: int, reason: str) -> Equivalence:
    return Equivalence(False, math.nan, rows, 0, reason)


def _line(exc: BaseException) -> str:
    return first_line(exc, 200)
