"""Construction-time checks of architecture settings, naming the config key,
so a bad size fails when the config is built rather than deep inside torch."""
from typing import Any


def check_size(arch: str, key: str, value: Any, *, minimum: int = 1) -> None:
    """`value` is an int (not a bool) of at least `minimum`."""
    if type(value) is not int or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{arch}: `{key}` must be {what}, got {value!r}")


def check_rate(arch: str, key: str, value: Any) -> None:
    """`value` is a dropout rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{arch}: `{key}` must be a number in [0, 1), got {value!r}")
