"""``python -m aioknock`` and the ``aioknock`` command (``start``).

The command's imports make tens of thousands of objects that live until it exits. The
cyclic collector, left on, would walk them several times while they are made (~15 M
instructions, ~3 ms of a one-knock start-up), then again at each full collection and
once more at exit: it is off until they are in, and then they are frozen (``gc.freeze``:
no collection walks them again, the one at exit neither; ~15 M more).
"""

import gc
import sys


def start() -> int:
    gc.disable()
    try:
        from .cli.main import main
    finally:
        gc.freeze()
        gc.enable()
    return main()


if __name__ == "__main__":
    sys.exit(start())
