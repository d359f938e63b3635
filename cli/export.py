"""``intervalnn export``: a model file's nominal model as PyTorch-layout weights."""

from __future__ import annotations

import click

from intervalnn.experiment.outputs import check_output

from .common import command
from .options import model_argument


@command("export", short_help="Write a model's nominal weights as .safetensors or .npz.")
@model_argument
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def export_command(model, out, force):
    """Write the nominal model of MODEL to OUT (.safetensors or .npz, by suffix).

    The names and layouts are those of the equivalent torch.nn.Sequential's
    state_dict (Linear weights (out, in), Conv2d weights (out, in, kh, kw)), so
    the file loads into it with load_state_dict(strict=True); no torch needed here.
    An existing OUT is refused unless --force.

    \b
    Examples:
      intervalnn export moons.npz moons.safetensors
      intervalnn export moons.npz weights.npz --force
    """
    from intervalnn.io import load_model
    from intervalnn.weights import SUFFIXES, save_weights

    path = check_output(out, "OUT", [("model file", model)], what="output file")
    if path.suffix.lower() not in SUFFIXES:
        raise click.BadParameter(
            f"{out} must end in .safetensors or .npz (the format is chosen by suffix)",
            param_hint="'OUT'",
        )
    if path.exists() and not force:
        raise click.UsageError(f"OUT: {out} exists; pass --force to overwrite it")
    net, _ = load_model(model)
    save_weights(net, path, overwrite=force)
    count = sum(int(v.size) for v in net.named_nominal().values())
    click.echo(f"wrote {path}: the nominal model's {count} parameters (PyTorch state_dict layout)")
