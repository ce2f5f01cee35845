"""Answers from models: the inference core, the stored models it loads and follows, the
runner that batches large requests, and explanations.

Imports monitoring (to count what it does), never records or http.
"""
