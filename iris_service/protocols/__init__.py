"""The other protocols the service speaks, beside its own JSON: the Open Inference Protocol
V2 (`v2` codec, `v2_routes`) and MLflow's scoring protocol (`mlflow_scoring` codec,
`mlflow_routes`). Codecs turn a protocol's bodies into a float64 array of flowers and the
model's answer back into the protocol's body; routes only glue a codec to the service."""
