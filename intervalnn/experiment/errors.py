"""The errors of the experiment API that a front end shows as one line (never a bug)."""

from __future__ import annotations

import re
from collections.abc import Callable

_NAME = re.compile(r"\{([a-z_]+)\}")


class SpecError(ValueError):
    """A run specification that cannot run: a bad value, or options that do not fit together.

    ``field`` names the option at fault (the schema's name, e.g.
    ``learning_rate``) and ``reason`` says what is wrong with it:
    ``str(error)`` is ``"epochs: 0 is not in the range x>=1."``.  A sentence
    about several options (``sentence=True``) writes them as ``{name}``, so
    that each front end spells them its way (:meth:`render`): ``str(error)``
    as the schema does, the command line as flags (``--pretrain-size``).
    """

    def __init__(self, field: str, reason: str, *, sentence: bool = False):
        self.field = field
        self.reason = reason
        self.sentence = sentence
        super().__init__(self.render())

    def render(self, spell: Callable[[str], str] = str) -> str:
        """The message with every option name spelled by ``spell``."""
        if self.sentence:
            return _NAME.sub(lambda m: spell(m[1]), self.reason)
        return f"{spell(self.field)}: {self.reason}"


class UnavailableError(RuntimeError):
    """Something a run needs is not there: an optional package (CuPy, Dask,
    matplotlib), a usable GPU, or a reachable Dask cluster.  The message says
    how to get it."""
