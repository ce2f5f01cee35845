"""The prediction store: every answered prediction and every label, the writer that fills it
and the feedback that joins a label to its prediction.

Imports monitoring, never http.
"""
