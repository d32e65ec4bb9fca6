"""`python -m drum_core.evaluate`: the `drum eval` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
