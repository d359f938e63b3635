"""The flat ``meta`` / ``scal`` / ``out`` arrays of the fused kernels, by name.

:func:`intervalnn.kernels.fused.train_step` and ``forward`` take their
configuration and return their status in small flat arrays (Numba passes
them cheaply); this module is the one definition of their layout, read by
the kernels and by their Python caller (``intervalnn``'s fused engine).

``meta`` (int64), for ``L`` Linear layers with sizes ``n_0 .. n_L``::

    [L, loss, float32, x_tiny, n_0 .. n_L, relu_1 .. relu_L, offset_1 .. offset_L, x_nonneg]

``relu_l`` is 1 where a ReLU follows Linear layer ``l`` (0-based in the
helpers), ``offset_l`` where its parameters start in the flat parameter
array, ``x_tiny`` / ``x_nonneg`` are flags of the data box (a nonzero
endpoint below ``TINY``; every lower endpoint ``>= 0``).  The fixed slots are
``META_*`` constants; the variable-length parts are reached through the
``meta_*_pos`` helpers (plain Python functions that Numba compiles inline).

``scal`` (float64): ``SCAL_*``, the learning rate's bounds and nominal value,
the bounds of ``1/m`` and ``max |x|`` of the data box.

``out`` (float64), what ``train_step`` returns: ``OUT_*``, the status
(``0`` done, ``DECLINED`` = 1: nothing changed, take the layered path), the
mean loss bounds, whether every new bound is finite, and the first parameter
whose nominal value left its box (layer, flat element, 1 for a bias), with
layer ``-1`` when none did.
"""

import numpy as np
from numba.extending import register_jitable

# ------------------------------------------------------------ meta (int64)
META_LAYERS = 0  # L, the number of Linear layers
META_LOSS = 1  # BCE or CE (intervalnn.kernels.fused)
META_FLOAT32 = 2  # 1 for a float32 model (float32 rounding unit and guards)
META_TINY = 3  # 1 if a nonzero data endpoint is below TINY in magnitude
META_SIZES = 4  # n_0 .. n_L start here: n_i at META_SIZES + i


@register_jitable
def meta_relu_pos(nl, layer):
    """Position in ``meta`` of the flag "a ReLU follows Linear layer ``layer``" (0-based)."""
    return META_SIZES + nl + 1 + layer


@register_jitable
def meta_offset_pos(nl, layer):
    """Position in ``meta`` of the offset of Linear layer ``layer``'s parameters."""
    return META_SIZES + 2 * nl + 1 + layer


@register_jitable
def meta_nonneg_pos(nl):
    """Position in ``meta`` of the flag "every lower endpoint of the data is >= 0" (the last)."""
    return META_SIZES + 3 * nl + 1


def meta_length(nl: int) -> int:
    """Length of ``meta`` for ``nl`` Linear layers."""
    return meta_nonneg_pos(nl) + 1


def make_meta(loss: int, float32: bool, sizes, relu_after, offsets, tiny=False, nonneg=False):
    """A ``meta`` array: ``sizes`` ``n_0 .. n_L``, per layer its ReLU flag and offset."""
    nl = len(sizes) - 1
    if len(relu_after) != nl or len(offsets) != nl:
        raise ValueError(f"{nl} layers need {nl} ReLU flags and offsets")
    meta = np.zeros(meta_length(nl), dtype=np.int64)
    meta[META_LAYERS], meta[META_LOSS], meta[META_FLOAT32] = nl, loss, bool(float32)
    meta[META_TINY] = bool(tiny)
    meta[META_SIZES : META_SIZES + nl + 1] = sizes
    for layer in range(nl):
        meta[meta_relu_pos(nl, layer)] = bool(relu_after[layer])
        meta[meta_offset_pos(nl, layer)] = offsets[layer]
    meta[meta_nonneg_pos(nl)] = bool(nonneg)
    return meta


# ------------------------------------------------------------ scal (float64)
SCAL_RATE_LO = 0  # learning rate lambda, rounded down
SCAL_RATE_HI = 1  # lambda rounded up
SCAL_RATE_NOM = 2  # lambda rounded to nearest (the nominal model's)
SCAL_INV_M_LO = 3  # 1/m (batch size m) rounded down, float64
SCAL_INV_M_HI = 4  # 1/m rounded up
SCAL_X_MAG = 5  # max |x| over the data box (the overflow guard)
SCAL_LENGTH = 6

# ------------------------------------------------------------ out (float64)
OUT_STATUS = 0  # 0.0 done, DECLINED (1.0): nothing changed
OUT_LOSS_LO = 1  # lower bound of the batch's mean loss
OUT_LOSS_HI = 2  # upper bound
OUT_FINITE = 3  # 1.0 if every new parameter bound is finite
OUT_OUTSIDE_LAYER = 4  # Linear layer of a nominal parameter outside its box, else -1
OUT_OUTSIDE_INDEX = 5  # its flat element in the weight or the bias
OUT_OUTSIDE_BIAS = 6  # 1.0 for the bias, 0.0 for the weight
OUT_LENGTH = 7
