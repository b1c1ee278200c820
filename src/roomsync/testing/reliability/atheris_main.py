"""Run one fuzz target under atheris (libFuzzer), coverage-guided over roomsync's code::

    python -m roomsync.testing.reliability.atheris_main TARGET RUNS NEW_DIR SEED_DIR

``NEW_DIR`` receives the inputs libFuzzer finds; ``SEED_DIR`` (the repository's
``tests/reliability/corpus/TARGET``) is only read. An undocumented exception ends the run
with libFuzzer's crash report and a non-zero exit. roomsync is imported under
``atheris.instrument_imports``, so this module imports nothing of it at the top.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def main(argv: list[str]) -> int:
    name, runs, new_dir, seed_dir = argv[1], int(argv[2]), argv[3], argv[4]
    atheris: Any = importlib.import_module("atheris")
    with atheris.instrument_imports(include=["roomsync"]):
        targets = importlib.import_module("roomsync.testing.reliability.fuzz_targets")
    target = targets.TARGETS[name]
    documented = targets.DOCUMENTED

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except documented:
            pass

    atheris.Setup(
        [argv[0], f"-runs={runs}", "-max_len=4096", "-timeout=10", new_dir, seed_dir],
        one_input,
    )
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
