"""Checks of user-given settings that many modules share: each raises ICCError with one line."""

import numbers

from icc.errors import ICCError


def check_positive_int(value, name: str, allow_none: bool = False):
    """`value` if it is an integer >= 1 (or None with `allow_none`), else ICCError naming `name`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ICCError(f"{name} must be a positive integer{' or null' if allow_none else ''}, got {value!r}")
    return int(value)


def check_non_negative(value, name: str, allow_none: bool = False):
    """`value` if it is a number >= 0 (or None with `allow_none`), else ICCError naming `name`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ICCError(f"{name} must be a non-negative number{' or null' if allow_none else ''}, got {value!r}")
    return value
