"""Option types and options that several commands share, built from the run schema.

The values of the training options are parsed by the schema
(:data:`intervalnn.experiment.FIELDS`) through click types that keep click's
help (``INTEGER RANGE``, ``[bce|ce]``); the options themselves are declared
once here and used by ``train``, ``audit-training``, ``demo``, ``certify``,
``audit``, ``plot`` and ``sweep``.
"""

from __future__ import annotations

from pathlib import Path

import click

from intervalnn.experiment import FIELDS, Field, SpecError
from intervalnn.experiment.saved import SPLITS


class _Parsed:
    """Converts with the schema's parser; click's errors name the option."""

    field: Field

    def convert(self, value, param, ctx):
        try:
            return self.field.parse(value)
        except SpecError as exc:
            self.fail(exc.reason, param, ctx)


class _Count(_Parsed, click.IntRange):
    def __init__(self, field: Field):
        super().__init__(min=field.minimum)
        self.field = field


class _Int(_Parsed, click.types.IntParamType):
    def __init__(self, field: Field):
        self.field = field


class _Choice(_Parsed, click.Choice):
    def __init__(self, field: Field):
        super().__init__(field.choices)
        self.field = field


class _Text(_Parsed, click.types.StringParamType):
    def __init__(self, field: Field):
        self.field = field


class _Number(_Parsed, click.ParamType):
    def __init__(self, field: Field, name: str):
        self.field = field
        self.name = name


def param_type(field: Field) -> click.ParamType:
    """The click type of a schema field: the schema parses, click shows the help."""
    if field.kind == "count":
        return _Count(field)
    if field.kind == "int":
        return _Int(field)
    if field.kind == "choice":
        return _Choice(field)
    if field.kind == "radius":
        return _Number(field, "EPS")
    if field.kind == "rate":
        return _Number(field, "RATE")
    if field.kind == "number":
        return _Number(field, "X")
    return _Text(field)


def field_option(name: str, **overrides):
    """The option of schema field ``name`` (``overrides``: click.option's keywords); a
    ``flag`` field is a switch (``--paired``)."""
    f = FIELDS[name]
    if f.kind == "flag":
        kw = {"is_flag": True, "default": f.default, "help": f.help}
        kw.update(overrides)
        return click.option(f.flag, name, **kw)
    kw = {"type": param_type(f), "default": f.default, "help": f.help, "metavar": f.metavar}
    if f.default is not None:
        kw["show_default"] = True
    kw.update(overrides)
    return click.option(f.flag, name, **kw)


def options(*decorators):
    """Apply ``decorators`` so that their options are listed in the order given."""

    def wrap(fn):
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return wrap


def grid_help(name: str) -> str:
    """The help of schema field ``name`` as an ``intervalnn sweep`` grid option."""
    if name == "seed":
        return "Seeds, e.g. 0-9 or 0,3,5."
    f = FIELDS[name]
    ranges = " (integers also as ranges A-B)" if f.is_int else ""
    return f"{f.help}  Comma-separated values to sweep{ranges}."


def fill_help(cmd: click.Command) -> click.Command:
    """Give every option of ``cmd`` named after a schema field and without help text the
    schema's help (as a grid option where it takes a comma-separated list)."""
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.help and param.name in FIELDS:
            grid = param.metavar == "V,V,..."
            param.help = grid_help(param.name) if grid else FIELDS[param.name].help
    return cmd


#: ``--dataset`` and ``--data-dir``.
dataset_options = options(field_option("dataset"), field_option("data_dir"))
#: Every option of a run (``intervalnn train``'s), in schema order.
training_options = options(*(field_option(name) for name in FIELDS))
#: ``--device cpu|gpu``.
device_option = field_option("device")


def json_option(help: str):
    return click.option("--json", "as_json", is_flag=True, help=help)


split_option = click.option(
    "--split",
    type=click.Choice(list(SPLITS)),
    default=SPLITS[0],
    show_default=True,
    help="Which split of the data set to use.",
)


def seed_option(help: str):
    """``--seed`` of the data of a saved model (default: the model's)."""
    return click.option("--seed", type=click.IntRange(min=0), default=None, help=help)


def epsilon_option(help: str):
    """``--epsilon``, a test-time radius overriding a saved model's (finite: a test radius,
    unlike a training ``--epsilon``, is never inf)."""
    radius = param_type(FIELDS["inference_epsilon"])
    return field_option("epsilon", type=radius, default=None, show_default=False, help=help)


class Radii(click.ParamType):
    """Comma-separated radii, e.g. ``0,1e-4,1e-3``."""

    name = "EPS,EPS,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list | tuple):
            return list(value)
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        if not parts:
            self.fail("give at least one radius, e.g. 0,1e-3,1e-2", param, ctx)
        radius = param_type(FIELDS["inference_epsilon"])  # test radii: finite
        return sorted({radius.convert(p, param, ctx) for p in parts})


class Size(click.ParamType):
    """An image size in pixels, ``WIDTHxHEIGHT``."""

    name = "WxH"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            w, h = (int(v) for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r} is not WIDTHxHEIGHT in pixels, e.g. 800x600", param, ctx)
        if not (50 <= w <= 20000 and 50 <= h <= 20000):
            self.fail(f"{value}: width and height must be 50..20000 pixels", param, ctx)
        return (w, h)


def _image_path(ctx, param, value):
    if value is not None and Path(value).suffix.lower() not in (".png", ".pdf"):
        raise click.BadParameter(
            f"{value!r} must end in .png or .pdf (the suffix picks the format)", ctx, param
        )
    return value


def figure_options(default: str):
    """``--output`` (.png or .pdf), ``--size`` and ``--dpi`` of a figure."""
    return options(
        click.option(
            "--output",
            "-o",
            default=default,
            metavar="FILE",
            show_default=True,
            callback=_image_path,
            help="Where to write the figure; .png or .pdf picks the format.",
        ),
        click.option(
            "--size",
            type=Size(),
            default="800x600",
            show_default=True,
            help="Image size in pixels (PDF: size / dpi inches).",
        ),
        click.option(
            "--dpi",
            type=click.IntRange(20, 1200),
            default=100,
            show_default=True,
            help="Dots per inch: the same --size in pixels with larger text and lines at a higher "
            "dpi (PDF: size / dpi inches).",
        ),
    )


def model_argument(fn):
    return click.argument("model", type=click.Path(readable=False))(fn)


def models_argument(fn):
    return click.argument(
        "models", nargs=-1, required=True, type=click.Path(readable=False), metavar="MODEL..."
    )(fn)
