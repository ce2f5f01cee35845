"""The service's own HTTP layer: request and answer bodies, the middlewares (measurement,
admission, API keys, records), the one error shape and the OpenAPI document.

Uses inference, records and monitoring; nothing below it imports it.
"""
