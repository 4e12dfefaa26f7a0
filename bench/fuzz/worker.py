"""One atheris fuzzing process: `python -m bench.fuzz.worker TARGET CORPUS_DIR SEED_DIR [libFuzzer flags]`."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["proxy"]):
    from bench.fuzz import targets
    targets.warm_up()   # the targets import what they parse lazily: instrument those modules too


def main() -> None:
    name = sys.argv[1]
    target = targets.TARGETS[name]
    argv = [sys.argv[0], *sys.argv[4:], *sys.argv[2:4]]   # libFuzzer: flags first, then corpus directories
    atheris.Setup(argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
