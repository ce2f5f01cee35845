"""What the service tells its operators: Prometheus metrics, data drift and live quality.

Imports the settings only; every other room may use it.
"""
