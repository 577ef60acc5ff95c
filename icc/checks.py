"""Checks of user-given settings that many modules share: each raises ICCError with one line."""

import numbers

from icc.errors import ICCError


def check_int(value, name: str, minimum: int = 0, allow_none: bool = False):
    """`value` if it is an integer >= `minimum` (or None with `allow_none`), else ICCError naming `name`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ICCError(f"{name} must be {kind}{' or null' if allow_none else ''}, got {value!r}")
    return int(value)


def check_positive_int(value, name: str, allow_none: bool = False):
    """`value` if it is an integer >= 1 (or None with `allow_none`), else ICCError naming `name`."""
    return check_int(value, name, 1, allow_none)


def check_non_negative(value, name: str, allow_none: bool = False):
    """`value` if it is a number >= 0 (or None with `allow_none`), else ICCError naming `name`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ICCError(f"{name} must be a non-negative number{' or null' if allow_none else ''}, got {value!r}")
    return value


def check_positive(value, name: str):
    """`value` if it is a number > 0, else ICCError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ICCError(f"{name} must be a positive number, got {value!r}")
    return value


def check_bool(value, name: str, allow_none: bool = False):
    """`value` if it is true or false (or None with `allow_none`), else ICCError naming `name`."""
    if not (isinstance(value, bool) or (value is None and allow_none)):
        raise ICCError(f"{name} must be true or false{' or null' if allow_none else ''}, got {value!r}")
    return value


def check_int_range(value, name: str, minimum: int = 1) -> tuple[int, int]:
    """(low, high) from a pair of integers minimum <= low <= high, else ICCError naming `name`."""
    pair = list(value) if isinstance(value, (list, tuple)) else None
    if (pair is None or len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in pair)
            or not minimum <= pair[0] <= pair[1]):
        raise ICCError(f"{name} must be [low, high], integers with {minimum} <= low <= high, got {pair or value!r}")
    return int(pair[0]), int(pair[1])


def check_ints(values, name: str, minimum: int = 1) -> list[int]:
    """A non-empty list of integers >= `minimum`, else ICCError naming `name`."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ICCError(f"{name} must be a non-empty list of integers, got {values!r}")
    return [check_int(v, f"each of {name}", minimum) for v in values]
