"""Argparse types for numeric options; argparse names the option in each error they raise."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def non_negative_number(text: str) -> float:
    """Parse an option value that must be a finite number of 0 or more; argparse names the option in the error."""
    value = _finite_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """Parse an option value that must be a finite number above 0; argparse names the option in the error."""
    value = _finite_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def _finite_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """Return an argparse type that accepts whole numbers of ``minimum`` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {text!r}")
        return value

    return parse


def fraction_up_to_one(text: str) -> float:
    """Parse a learning rate or fraction: a number above 0 and at most 1."""
    value = positive_number(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be at most 1, got {text!r}")
    return value


non_negative_integer = integer_at_least(0)
