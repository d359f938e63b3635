"""The ``intervalnn`` command group (installed as the ``intervalnn`` console script).

Each command parses its options, calls the library (mostly
:mod:`intervalnn.experiment`) and prints.  Commands are registered below by
name and imported only when used (click's lazy-group pattern), so that
``intervalnn train`` does not import the sweep, the audits or matplotlib.

Exit codes: 0 success, 1 data or model errors, 2 usage errors.
"""

from __future__ import annotations

import importlib
import sys

import click

from .common import CONTEXT, version

#: Every command: name -> "module:object" (relative to this package).
COMMANDS = {
    "audit": "audit:audit_command",
    "audit-training": "audit:audit_training_command",
    "certify": "commands:certify_command",
    "demo": "demo:demo_command",
    "export": "export:export_command",
    "info": "commands:info_command",
    "plot": "plot:plot_group",
    "sweep": "sweep:sweep_command",
    "train": "commands:train_command",
}


class LazyGroup(click.Group):
    """A group whose commands are imported from :data:`COMMANDS` when first used."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx, cmd_name):
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, name = self.lazy[cmd_name].split(":")
            cmd = getattr(importlib.import_module(f"{__name__}.{module}"), name)
            if not isinstance(cmd, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            from .options import fill_help  # schema help for options declared without it

            fill_help(cmd)
            self.add_command(cmd, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings=CONTEXT)
@version
def main():
    """Sound certified training and certification of neural networks (FullCert).

    \b
    Examples:
      intervalnn demo
      intervalnn train --dataset moons --epsilon 0.001 --output moons.npz
      intervalnn certify moons.npz --dataset moons --epsilon 0.001 --json
      intervalnn info moons.npz
      intervalnn plot barriers moons.npz -o barriers.png

    \b
    Run 'intervalnn COMMAND --help' for each command's options.
    Exit codes: 0 success, 1 data or model errors, 2 usage errors.
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
