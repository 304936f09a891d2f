"""Waiting for another process to get somewhere: a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(pred: Callable[[], bool], limit: float = 60.0) -> bool:
    """True as soon as `pred()` is; False when `limit` seconds pass first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False
