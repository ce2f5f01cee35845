"""The served code of the Iris model service, in rooms whose imports only point down.

    settings, names, background   the base: one settings object, the problem's names, tasks,
    errors                        and the refusals every room may raise
    monitoring/                   metrics, drift, live quality
    inference/                    the inference core, stored models, the runner, explanations
    records/                      the prediction store, its writer, feedback
    http/                         bodies, middlewares, API keys, admission, the error shape
    protocols/                    V2 (REST and gRPC) and MLflow scoring, on the same core

A request: http.middleware -> service.IrisClassifier -> inference.core (in the API worker,
or the runner for large batches) -> http.answers; records and metrics on the way out.
docs/architecture.md draws it.
"""
