"""V2 gRPC inference requests as a client builds them (the gRPC bench and the tests)."""

from __future__ import annotations

import numpy as np

from iris_service.names import MODEL_NAME
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2 as pb


def infer_request(
    flowers: np.ndarray, datatype: str = "FP64", raw: bool = False, **fields: object
) -> pb.ModelInferRequest:
    """A ModelInferRequest of `flowers`: typed contents, or raw little-endian bytes."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input-0", datatype=datatype, shape=list(flowers.shape)
    )
    values = flowers.astype("<f8" if datatype == "FP64" else "<f4")
    request = pb.ModelInferRequest(model_name=MODEL_NAME, **fields)
    if raw:
        request.raw_input_contents.append(values.tobytes())
    elif datatype == "FP64":
        tensor.contents.fp64_contents.extend(values.ravel().tolist())
    else:
        tensor.contents.fp32_contents.extend(values.ravel().tolist())
    request.inputs.append(tensor)
    return request
