"""`facestream <command>`: the one entry point, above every layer.

Each layer owns the table of its commands: `services.cli` the services and the user tasks (gallery,
recognize, events), `training.cli` training and evaluation. This module only joins the two, so that
neither layer imports the other, and the serving image (which holds `shared/` and `services/` only)
answers a training command with one line instead of a traceback.
"""
from __future__ import annotations

import sys

from services import cli as services_cli  # first: it caps OpenBLAS's threads before numpy loads

TRAINING_COMMANDS = ("train", "eval")


def commands() -> dict[str, tuple[str, str]]:
    """name -> (module, help) of every command this installation has."""
    table = dict(services_cli.COMMANDS)
    try:
        from training import cli as training_cli
    except ImportError:  # the serving image: no training/
        return table
    return {**table, **training_cli.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    table = commands()
    if argv and argv[0] in TRAINING_COMMANDS and argv[0] not in table:
        print(f"facestream {argv[0]}: training/ is not installed here (the serving image holds shared/ and "
              "services/ only); run it from a checkout", file=sys.stderr)
        return 2
    return services_cli.dispatch(table, argv)


if __name__ == "__main__":
    sys.exit(main())
