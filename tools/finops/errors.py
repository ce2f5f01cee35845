"""The one exception type the FinOps tool raises for bad input."""

from __future__ import annotations


class FinOpsError(ValueError):
    """Invalid input (prices, traffic, capacity or policy), with a message meant for the user."""
