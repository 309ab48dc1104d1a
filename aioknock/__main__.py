"""``python -m aioknock`` and the ``aioknock`` command (``start``).

The command's imports make tens of thousands of objects that live until it exits; the
cyclic collector, left on, walks them several times while they are made (~15 M
instructions, ~3 ms of a one-knock start-up): it is off until they are in.
"""

import gc
import sys


def start() -> int:
    gc.disable()
    try:
        from .cli.main import main
    finally:
        gc.enable()
    return main()


if __name__ == "__main__":
    sys.exit(start())
