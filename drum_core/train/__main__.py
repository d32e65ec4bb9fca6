"""`python -m drum_core.train` and `torchrun ... -m drum_core.train`: the `drum train` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
