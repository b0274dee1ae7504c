"""The commands this package adds to spaCy's CLI, one module each, registered
through setup.cfg's `spacy_cli` entry points."""
import sys
from typing import NoReturn

from wasabi import msg
from wasabi.util import color


def fail(message: str) -> NoReturn:
    """`msg.fail(message, exits=1)` on one line: wasabi wraps at 80 columns,
    and a user's error should read as one line naming the option and value."""
    line = f"{msg.icons['fail']} {message}"
    print(f"\n{color(line, fg=msg.colors['red']) if msg.show_color else line}\n")
    sys.exit(1)
