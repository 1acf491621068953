"""What the models predict, defined once for training (labels) and for live accuracy (the
outcome a logged prediction is judged by)."""

from __future__ import annotations

# A hit earns at least this many times its budget worldwide.
HIT_RATIO = 2.0


def is_hit(revenue: float, budget: float) -> bool:
    """Whether a film with this worldwide revenue and budget (both in USD) is a hit."""
    return revenue >= HIT_RATIO * budget
