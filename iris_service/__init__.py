"""Supporting code of the Iris model service: one module per concern.

Data path: request -> middleware.RequestMonitoringMiddleware -> service.IrisClassifier
(API service) -> runner.IrisModelRunner (own process, adaptive batching) -> model.
"""
