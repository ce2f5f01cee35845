"""Code generated from grpc_predict_v2.proto by `make grpc-code` (tools/grpc_code.py, grpcio-tools
1.85.0): the V2 gRPC messages and the GRPCInferenceService stub and servicer. Do not edit."""
