"""Construction-time checks of architecture settings, naming the config key,
so a bad size fails when the config is built rather than deep inside torch."""
from typing import Any

from thinc.api import Model


def check_size(arch: str, key: str, value: Any, *, minimum: int = 1) -> None:
    """`value` is an int (not a bool) of at least `minimum`."""
    if type(value) is not int or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{arch}: `{key}` must be {what}, got {value!r}")


def check_rate(arch: str, key: str, value: Any) -> None:
    """`value` is a dropout rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{arch}: `{key}` must be a number in [0, 1), got {value!r}")


def tok2vec_width(arch: str, tok2vec: Model) -> int:
    """The output width (dim nO) of the tok2vec a head is built on."""
    width = tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else None
    if width is None:
        raise ValueError(
            f"{arch} needs a tok2vec with a known output width (dim 'nO'); "
            f"set `width` on the tok2vec or listener"
        )
    check_size(arch, "tok2vec.width", width)
    return width
