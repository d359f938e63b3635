"""Fused, serial kernels for Linear/ReLU MLPs: one call per SGD step, one per certification.

One call of :func:`train_step` does a whole FullCert step on one batch --
interval forward, loss bounds and loss gradient, interval backward, the
outward-rounded SGD update -- and the same step of the *nominal* model in
round-to-nearest, mirroring every interval operation.  :func:`forward` is the
interval forward alone (certification).  The layered path (``intervalnn.layers``
with one kernel call per interval operation) stays the general path and the
reference; these kernels promise *soundness* (every bound holds for the real
numbers), not the IEEE 1788 tightest rounding of each operation.

Everything is computed in float64 (float32 models: float32 values are exact
in float64, and each step's parameter bounds are rounded outward to float32
at its end, the nominal parameters to nearest).  ``fastmath`` stays off.
Points 1-5 below are stated for float64 with one summation; point 6 says how
the unit ``rn`` that every widening takes extends them to float SGD.  The
widening rules and their units are :mod:`intervalnn.kernels.rounding`'s
(section "one-flop widening", with the proofs); the layout of the ``meta``,
``scal`` and ``out`` arrays is :mod:`intervalnn.kernels.fused_layout`'s.

Soundness argument (u = 2^-53, eta = 2^-1074, RN = round to nearest):

1. **One-flop widening** (``rounding.widen_dn`` / ``widen_up`` and the
   product and quotient forms; Rump, Zimmermann, Boldo, Melquiond, BIT 49
   (2009), Algorithm 1, proved in ``rounding``): for finite ``c = RN(x)``,
   ``[fl(c - e), fl(c + e)]`` with ``e = fl(fl(phi |c|) + eta)`` encloses the
   real ``x``; exact zeros are kept.  The rule needs ``c`` finite: see 4.

2. **Dot products** use an a-priori bound instead of widening every
   operation (three flops per term fewer, and no subnormals from widened
   zeros).  A reduction ``S = t_0 + t_1 + ... + t_(K-1)`` of K exact terms (a
   bias, or endpoint products chosen by the IEEE 1788 sign cases so that the
   *exact* minimum / maximum over the boxes is the product of the chosen
   endpoints) is summed in RN in a fixed order: left to right, or, for the
   weight gradients of narrow layers (:func:`_outer_sums`), as four
   interleaved partial sums over the batch, each in batch order, then added
   pairwise.  In any order ``|S_comp - S| <= gamma_K sum |t_k|`` (Higham,
   *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Lemma 3.1 and
   eq. 3.5: each term meets at most K roundings), provided no product underflows
   (additions that underflow are exact).  The magnitudes ``m_k >= |t_k|``
   (products of the operands' ``max(|lo|, |hi|)``) are summed alongside into
   ``A_comp >= (1 - gamma_K) sum m_k``, so the error is at most
   ``gamma_K / (1 - gamma_K) A_comp <= fl(K C0 A_comp)`` with ``C0 =
   rounding.C0_64 = (1 + 2^-19) u`` (for ``K <= 2^30``; proof with the unit
   ``UNIT64_REAL`` in ``rounding``).  Products cannot underflow, and ``K C0 A_comp`` is normal or
   zero, when no nonzero operand endpoint is below ``TINY = 2^-400`` in
   magnitude (nonzero products are then ``>= 2^-800``); each tensor carries
   that *tiny* flag, and where it is set the error bound becomes
   ``up(fl(K C0 A) + (2K + 1) eta)`` (K underflowing products err by
   ``eta/2`` each, and the bound's own product by ``eta/2``).  The bounds are
   ``[dn(S_lo - err), up(S_hi + err)]``.

3. **Nominal model inside the box.**  Each nominal operation mirrors an
   interval operation on members of its input boxes, in the same order:
   ``fl`` is monotone, so a nominal product (sum) lies between the RN values
   of the chosen endpoint products (sums), hence between the uncorrected
   lower and upper sums, hence inside the corrected bounds.  ReLU, its
   derivative mask and the SGD update are monotone in the same way.  The
   nominal loss gradient is, as in ``intervalnn.losses``, the lower endpoint
   of the same interval formula at the nominal logits, clamped into the box
   gradient (the fast exp/log1p bounds below are not monotone to the last
   bit, so the clamp is what makes it provable; it moves nothing unless the
   nominal logit is within ~2^-46 relative of a box endpoint).  The kernel
   also checks ``lo <= nominal <= hi`` for every parameter after every step.

4. **No overflow.**  Before a step, a bound on every intermediate magnitude
   is propagated from ``max |parameter|`` and ``max |input|`` (each layer,
   the loss gradient ``<= 1``, the backward pass, the update; every bound
   doubled to absorb rounding); if it exceeds ``2^960`` the kernel declines
   (returns status 1, changes nothing) and the caller takes the layered
   path, which handles overflow.  So every widened value is finite.  For
   float32 models the limit is ``2^120``, so that no float32 computation on
   members overflows either (the layered float32 path turns such overflows
   into infinite bounds).  The loss itself may overflow ``exp``
   (cross-entropy): those paths are infinity-safe.

5. **exp and log1p** bounds come from float64 evaluations with proved
   relative errors (:func:`_exp_bounds`, :func:`_log1p_bounds`), ~10x cheaper
   than the double-double functions of :mod:`intervalnn.kernels.elementary`,
   whose argument reduction, tables and edge cases they reuse.  No libm.

6. **Float SGD in the model's dtype.**  Every bound also contains the same
   computation done in floating point in the model's dtype (the nominal
   formulas of ``intervalnn.losses`` and ``layers`` evaluated on members of
   the boxes, every operation rounded to nearest, exp faithfully, sums and
   dot products in any order, with or without FMA).  Each widening takes the
   unit ``rn = (phi, eta, c0, float32)`` of the model's dtype,
   ``rounding.widening_unit``: ``UNIT64`` (one float64 rounding; sum bounds
   taken twice, ``c0 = 2 C0``, for a second summation in any other order) or
   ``UNIT32`` (one float32 rounding, even faithful; ``c0 = C0_32`` per term
   for ``K <= MAX_TERMS_32 = 2^14``: longer float32 sums decline), proved in
   ``rounding``.

   * exp bounds are widened by one unit (a faithful exp of the dtype), and
     the softmax sums of ``K - 1`` nonnegative terms by ``K c0`` relative
     (another order).  The nominal model itself stays float64 inside the
     kernel; it is the box that contains float SGD.
"""

import math
from functools import partial

import numpy as np
from numba import njit

from . import elementary as _el
from . import rounding as _r
from .fused_layout import (
    META_FLOAT32,
    META_LAYERS,
    META_LOSS,
    META_SIZES,
    META_TINY,
    OUT_FINITE,
    OUT_LOSS_HI,
    OUT_LOSS_LO,
    OUT_OUTSIDE_BIAS,
    OUT_OUTSIDE_INDEX,
    OUT_OUTSIDE_LAYER,
    OUT_STATUS,
    SCAL_INV_M_HI,
    SCAL_INV_M_LO,
    SCAL_RATE_HI,
    SCAL_RATE_LO,
    SCAL_RATE_NOM,
    SCAL_X_MAG,
    meta_nonneg_pos,
    meta_offset_pos,
    meta_relu_pos,
)
from .rounding import (
    F64_MAX,
    MAX_TERMS_32,
    bits_f64,
    to32_rd,
    to32_ru,
    two_sum_err,
    widen_dn,
    widen_dn_div,
    widen_dn_mul,
    widen_dn_sum_pos,
    widen_up,
    widen_up_div,
    widen_up_mul,
    widening_unit,
)

_jit = partial(njit, cache=True, nogil=True, error_model="numpy")

TINY = 2.0**-400  # nonzero operands at least this large never make products underflow
GUARD = 2.0**960  # a-priori magnitude bound that rules out overflow
GUARD32 = 2.0**120  # the same for float32 models: no member's float32 value overflows either
LO, HI, NOM, MAG = 0, 1, 2, 3  # planes of a tensor; accumulators use (S_lo, S_hi, N, A)
BCE, CE = 0, 1
DECLINED = 1.0  # out[OUT_STATUS] of a declined step


# ------------------------------------------------------------ widened exp


@_jit
def _exp_widened(x, rn):
    """``(lo, hi)`` around ``exp(x)`` and its faithful rounding to ``rn``'s format (one exp)."""
    lo, hi = _exp_bounds(x)
    return max(widen_dn(lo, rn), 0.0), widen_up(hi, rn)


@_jit
def _exp_lo(x, rn):
    return _exp_widened(x, rn)[0]


@_jit
def _exp_hi(x, rn):
    return _exp_widened(x, rn)[1]


@_jit
def _is_tiny(v):
    return (v != 0.0) & (abs(v) < TINY)


# ------------------------------------------------------------ exp and log1p

_C3 = 1.0 / 6.0
_C4 = 1.0 / 24.0
_C5 = 1.0 / 120.0
_C6 = 1.0 / 720.0
_C7 = 1.0 / 5040.0
_TWO_M48 = 2.0**-48
_TWO_M44 = 2.0**-44


@_jit
def _exp_bounds(x):
    """``(lo, hi)`` floats with ``lo <= exp(x) <= hi``; relative width about 2^-47.

    Fast path for ``-707 <= x <= 709``, ``|x| >= 2^-60``; elsewhere (and for
    NaN) the double-double :func:`elementary._exp_bounds`.

    Proof.  :func:`elementary._reduce` gives ``x = kL + R + d`` with ``L =
    ln2/64``, ``R = rh + rl`` exactly, ``|rl| <= u|rh|``, ``|R| <= 0.0054153``,
    ``|d| <= 2^-111``; ``exp(x) = 2^q T exp(R) exp(d)`` with ``k = 64q + j``,
    ``T = 2^(j/64) = TH + TL + O(u^2 T)``.  ``p`` (Horner at ``rh``, RN
    coefficients ``1/n!``, truncated after ``R^5/7!``) is within ``0.53u`` of
    ``P = (expm1(R) - R)/R^2 >= 0.499`` (last addition ``0.501u``, everything
    before it damped by ``|rh| <= 0.0055``, ``rl``'s effect ``0.001u``,
    truncation ``0.006u``); ``fl(rh^2) p`` is then ``R^2 P (1 + 5.1u)`` with
    ``|R^2 P| <= 1.5e-5``, and the two final additions err by ``<= u (1.5e-5
    + 0.00545)``: ``|e1 - expm1(R)| <= 0.006u``.  ``y = fl(TH + fl(fl(TH e1) +
    TL))``: the inner operations err by ``<= 0.022u TH``, the dropped ``TL e1``
    is ``<= 0.0055u TH``, the table ``u^2 T``, ``e1`` contributes ``0.0061u
    T``, the last addition ``u |y|``; with ``T <= 1.0056 T exp(R)`` this
    gives ``|y - T exp(R) exp(d)| <= 1.05u t`` for ``t = T exp(R) exp(d)``,
    so ``|t - y| <= delta = 2^-49 y``.  Then ``fl(y - 2 delta) <= y - delta``
    and ``fl(y + 2 delta) >= y + delta`` (one RN error ``u y < delta``), and
    the scaling by ``2^q`` (``-1022 <= q <= 1023``) is exact because
    ``exp(x) >= exp(-707) > 2^-1020`` and ``<= exp(709) < MAX / 2``.
    """
    if not (-707.0 <= x <= 709.0) or abs(x) < 2.0**-60:
        return _el._exp_bounds(x)
    k, rh, rl = _el._reduce(x)
    p = ((((_C7 * rh + _C6) * rh + _C5) * rh + _C4) * rh + _C3) * rh + 0.5
    e1 = rh + (rl + (rh * rh) * p)
    j = k & 63
    th = _el._TH[j]
    y = th + (th * e1 + _el._TL[j])
    d = y * _TWO_M48
    s = bits_f64(np.int64((k >> 6) + 1023) << 52)
    return (y - d) * s, (y + d) * s


@_jit
def _log1p_bounds(x):
    """``(lo, hi)`` floats with ``lo <= log1p(x) <= hi``; relative width about 2^-43.

    Fast path for ``2^-60 <= x <= 2^1000``; elsewhere (0, tiny, huge, inf,
    negative, NaN) :func:`elementary._log1p_bounds`.

    Proof.  ``yh + yl = 1 + x`` exactly (TwoSum), ``yh = f 2^e`` with ``f in
    [1/sqrt2, sqrt2)``, ``0 <= e <= 1001``, ``ml = yl 2^-e`` (an underflow
    here costs ``<= 2^-1075``, negligible against the slack below);
    ``c = 1 + i/64`` with ``|f - c| <= 1/128``, as in
    :func:`elementary._log_dd`.  ``f - c`` is exact (Sterbenz), so ``N =
    fl(f - c + ml)`` errs by ``u``, ``D = fl(fl(f + c) + ml)`` by ``2.1u``,
    ``s = fl(N/D)`` by ``4.2u`` relative, ``|s| <= 0.0056``; the series
    ``1 + w/3 + w^2/5 + w^3/7`` (``w = fl(s^2)``, truncation ``w^4/9 <
    0.001u``) errs by ``<= 1.002u``, so ``lm = 2 fl(s P) = 2 atanh(s_exact)
    (1 + 6.3u)``.  The table ``_LCH`` is ``log c`` rounded to nearest (``u``
    relative), ``fl(e LN2H) = e ln2 (1 + 1.3u)``.  With the three
    magnitudes summing to ``Sigma = |e ln2| + |log c| + |log(m/c)| <= 3.04
    |log1p x|`` (the lemma of :func:`elementary._log_dd`, checked in its
    tests), the two final additions and the above give ``|h - log1p x| <= u
    |log1p x| + 9.6u Sigma <= 31.2u |h| <= delta = 2^-45 |h|``.  ``h > 0``,
    and as in :func:`_exp_bounds` ``fl(h -+ 2 delta)`` are the bounds.
    """
    if not (2.0**-60 <= x <= 2.0**1000):
        return _el._log1p_bounds(x)
    yh = 1.0 + x
    yl = two_sum_err(1.0, x, yh)
    f, e = math.frexp(yh)
    if f < _el._SQRT_HALF:
        f *= 2.0
        e -= 1
    ml = yl * bits_f64(np.int64(1023 - e) << 52)
    i = int(np.floor((f - 1.0) * 64.0 + 0.5))
    c = 1.0 + i * 0.015625
    s = ((f - c) + ml) / ((f + c) + ml)
    w = s * s
    p = 1.0 + w * (_el._A3H + w * (_el._A5H + w * _el._A7H))
    h = e * _el._LN2H + (_el._LCH[i + 19] + 2.0 * (s * p))
    d = h * _TWO_M44
    return h - d, h + d


@_jit
def _sigmoid_lo(a, elo, ehi, rn):
    """Lower bound of ``sigmoid(a)`` from bounds ``elo <= exp(-|a|) <= ehi``.

    ``sigmoid(a) = E / (1 + E)`` (``a < 0``, increasing in ``E``) or
    ``1 / (1 + E)`` (``a >= 0``, decreasing), as in ``functions._sigmoid_bound``.
    """
    if a < 0.0:
        v = widen_dn_div(elo, widen_up(1.0 + elo, rn), rn)
    else:
        v = widen_dn_div(1.0, widen_up(1.0 + ehi, rn), rn)
    return max(v, 0.0)


@_jit
def _sigmoid_hi(a, elo, ehi, rn):
    if a < 0.0:
        v = widen_up_div(ehi, widen_dn(1.0 + ehi, rn), rn)
    else:
        v = widen_up_div(1.0, widen_dn(1.0 + elo, rn), rn)
    return min(v, 1.0)


# ------------------------------------------------------------ interval GEMM pieces
# Tensors are (4, features, batch): planes lo, hi, nominal, max(|lo|, |hi|),
# the batch innermost and contiguous.  Accumulators use the planes S_lo,
# S_hi, nominal sum N, magnitude sum A.  Every inner loop touches one plane
# (one store stream, one or two load streams: few enough runtime alias checks
# for LLVM to vectorise), and the sign cases of the IEEE 1788 multiplication
# table are hoisted out of it or made branch-free selects.


@_jit
def _axpy(acc, r, v, k, sl, sh, sn, sm):
    """``acc[:, r, :] += s * v[:, k, :]`` for the scalar interval ``s = [sl, sh]`` (nominal ``sn``).

    The lower plane receives the RN value of the exact minimum over the two
    boxes (the product of the endpoints the sign case selects), the upper
    plane the maximum, the nominal plane ``sn * v_nominal``, the magnitude
    plane ``sm * v_mag``.
    """
    if sm == 0.0 and sn == 0.0:  # s = [0, 0]: every plane gets + 0 (exact)
        return
    m = acc.shape[2]
    if sl >= 0.0:
        for b in range(m):
            x = v[0, k, b]
            acc[0, r, b] += x * (sl if x >= 0.0 else sh)
        for b in range(m):
            x = v[1, k, b]
            acc[1, r, b] += x * (sh if x >= 0.0 else sl)
    elif sh <= 0.0:
        for b in range(m):
            x = v[1, k, b]
            acc[0, r, b] += x * (sl if x >= 0.0 else sh)
        for b in range(m):
            x = v[0, k, b]
            acc[1, r, b] += x * (sh if x >= 0.0 else sl)
    else:
        for b in range(m):
            acc[0, r, b] += min(sl * v[1, k, b], sh * v[0, k, b])
        for b in range(m):
            acc[1, r, b] += max(sl * v[0, k, b], sh * v[1, k, b])
    for b in range(m):
        acc[2, r, b] += sn * v[2, k, b]
    for b in range(m):
        acc[3, r, b] += sm * v[3, k, b]


@_jit
def _mm_weights(acc, w, w_t, v):
    """``acc[:, r, :] += sum_k w(r, k) * v[:, k, :]``, ``k`` in order, for a weight tensor ``w``.

    ``w(r, k)`` is ``w[:, k, r]`` with ``w_t`` (forward: ``z_j = sum_i x_i
    W_ij``) or ``w[:, r, k]`` (backward: ``dx_i = sum_j g_j W_ij``).
    """
    for r in range(acc.shape[1]):
        for k in range(v.shape[1]):
            if w_t:
                _axpy(acc, r, v, k, w[0, k, r], w[1, k, r], w[2, k, r], w[3, k, r])
            else:
                _axpy(acc, r, v, k, w[0, r, k], w[1, r, k], w[2, r, k], w[3, r, k])


@_jit
def _sum4(x, m):
    """A fixed-order sum of ``x[0:m]``: four interleaved partial sums, each in batch order."""
    s0 = s1 = s2 = s3 = 0.0
    m4 = m - m % 4
    for b in range(0, m4, 4):
        s0 += x[b]
        s1 += x[b + 1]
        s2 += x[b + 2]
        s3 += x[b + 3]
    for b in range(m4, m):
        s0 += x[b]
    return (s0 + s1) + (s2 + s3)


@_jit
def _outer_sums(out, a, a_nonneg, g, tmp):
    """``out[:, i, j] = sum_b a[:, i, b] * g[:, j, b]`` (weight gradients) as accumulators.

    The per-sample products go to ``tmp`` (vectorised), then :func:`_sum4`
    adds them in a fixed order (any order is covered by the bound).  With
    ``a_nonneg`` (ReLU outputs, nonnegative data) the lower product is
    ``g_lo * (a_lo or a_hi)`` by the sign of ``g_lo``; otherwise the hull
    of the four endpoint products.
    """
    m = a.shape[2]
    for i in range(a.shape[1]):
        for j in range(g.shape[1]):
            if a_nonneg:
                for b in range(m):
                    x = g[0, j, b]
                    tmp[0, b] = x * (a[0, i, b] if x >= 0.0 else a[1, i, b])
                for b in range(m):
                    x = g[1, j, b]
                    tmp[1, b] = x * (a[1, i, b] if x >= 0.0 else a[0, i, b])
            else:
                for b in range(m):
                    al, ah, gl, gh = a[0, i, b], a[1, i, b], g[0, j, b], g[1, j, b]
                    tmp[0, b] = min(min(al * gl, al * gh), min(ah * gl, ah * gh))
                for b in range(m):
                    al, ah, gl, gh = a[0, i, b], a[1, i, b], g[0, j, b], g[1, j, b]
                    tmp[1, b] = max(max(al * gl, al * gh), max(ah * gl, ah * gh))
            for b in range(m):
                tmp[2, b] = a[2, i, b] * g[2, j, b]
            for b in range(m):
                tmp[3, b] = a[3, i, b] * g[3, j, b]
            for q in range(4):
                out[q, i, j] = _sum4(tmp[q], m)


@_jit
def _finish(acc, nterms, tiny, rn):
    """Accumulators of ``nterms``-term sums -> ``(lo, hi, nominal, mag)`` in place; the tiny flag.

    The bound of point 2 in the module docstring.
    """
    ck = nterms * rn[2]
    extra = (2 * nterms + 1) * rn[1]
    lo = acc[0].reshape(-1)
    hi = acc[1].reshape(-1)
    mag = acc[3].reshape(-1)
    if tiny:
        for t in range(mag.size):
            mag[t] = widen_up(ck * mag[t] + extra, rn)
    else:  # a zero magnitude sum: every product of members is exactly 0
        for t in range(mag.size):
            a = mag[t]
            mag[t] = ck * a + (extra if a != 0.0 else 0.0)
    for t in range(lo.size):
        lo[t] = widen_dn(lo[t] - mag[t], rn)
    for t in range(hi.size):
        hi[t] = widen_up(hi[t] + mag[t], rn)
    flag = False
    for t in range(mag.size):
        mag[t] = max(abs(lo[t]), abs(hi[t]))
        flag |= _is_tiny(lo[t]) | _is_tiny(hi[t])
    return flag


@_jit
def _fill_rows(acc, init):
    """Row ``r`` of every plane of ``acc`` starts at ``init[:, r]`` (a bias: lo, hi, nom, mag)."""
    for q in range(4):
        for r in range(acc.shape[1]):
            v = init[q, r]
            for b in range(acc.shape[2]):
                acc[q, r, b] = v


@_jit
def _relu(dst, z):
    """ReLU of a ``(lo, hi, nom, mag)`` tensor (exact)."""
    for q in range(3):
        d = dst[q].reshape(-1)
        s = z[q].reshape(-1)
        for t in range(s.size):
            x = s[t]
            d[t] = x if x > 0.0 else 0.0
    dst[3] = dst[1]


@_jit
def _relu_mask(g, z):
    """Gradient through ReLU: ``g`` where ``z > 0``, 0 where ``z <= 0``, hull with 0 otherwise."""
    gl = g[0].reshape(-1)
    gh = g[1].reshape(-1)
    gn = g[2].reshape(-1)
    gm = g[3].reshape(-1)
    zl = z[0].reshape(-1)
    zh = z[1].reshape(-1)
    zn = z[2].reshape(-1)
    for t in range(gl.size):
        x = gl[t]
        gl[t] = x if zl[t] > 0.0 else (0.0 if zh[t] <= 0.0 else min(x, 0.0))
    for t in range(gh.size):
        x = gh[t]
        gh[t] = x if zl[t] > 0.0 else (0.0 if zh[t] <= 0.0 else max(x, 0.0))
    for t in range(gn.size):
        gn[t] = gn[t] if zn[t] > 0.0 else 0.0
    for t in range(gm.size):
        gm[t] = max(abs(gl[t]), abs(gh[t]))


# ------------------------------------------------------------ layers


@_jit
def _layer_views(th, meta, layer):
    """Views ``W (4, n, p)`` and ``b (4, p)`` of Linear layer ``layer`` (0-based) in ``th``."""
    nl = meta[META_LAYERS]
    n, p = meta[META_SIZES + layer], meta[META_SIZES + layer + 1]
    off = meta[meta_offset_pos(nl, layer)]
    w = th[off : off + 4 * n * p].reshape((4, n, p))
    b = th[off + 4 * n * p : off + 4 * n * p + 4 * p].reshape((4, p))
    return w, b


@_jit
def _prepare(th, meta):
    """``(max |parameter|, tiny flags of the weights)`` in one pass over the parameters."""
    nl = meta[META_LAYERS]
    big = 0.0
    tiny = np.zeros(nl, dtype=np.bool_)
    for layer in range(nl):
        w, b = _layer_views(th, meta, layer)
        wl, wh, wm = w[0].reshape(-1), w[1].reshape(-1), w[3].reshape(-1)
        for t in range(wl.size):
            v = wm[t]
            big = v if not (v <= big) else big
            tiny[layer] |= _is_tiny(wl[t]) | _is_tiny(wh[t])
        for j in range(b.shape[1]):
            v = b[3, j]
            big = v if not (v <= big) else big
    return big, tiny


@_jit
def _no_overflow(meta, m, big, x_mag, lam_hi):
    """Point 4 of the module docstring: True if no intermediate value can reach 2^960.

    ``big`` bounds every parameter (and so every nominal parameter), ``x_mag``
    every input; each bound is doubled to absorb rounding.  Forward: ``|z_l|
    <= 2 (n_(l-1) |a_(l-1)| big + big)``; loss gradient ``<= 2``; backward:
    ``|dW|, |db| <= 2 m |a| |g|``, ``|g_(l-1)| <= 2 n_l |g_l| big``; update
    ``<= 2 (big + lambda |grad|)``.  NaN fails the test.
    """
    if not (big <= F64_MAX and x_mag <= F64_MAX):  # inf or NaN anywhere: never fused
        return False
    nl = meta[META_LAYERS]
    zs = np.empty(nl + 1)
    zs[0] = x_mag
    worst = x_mag
    for layer in range(nl):
        zs[layer + 1] = 2.0 * (meta[META_SIZES + layer] * zs[layer] * big + big)
        worst = max(worst, zs[layer + 1])
    g = 2.0
    for layer in range(nl - 1, -1, -1):
        step = 2.0 * m * g * max(zs[layer], 1.0)
        worst = max(worst, step, 2.0 * (big + lam_hi * step))
        g = 2.0 * meta[META_SIZES + layer + 1] * g * big
        worst = max(worst, g)
    return worst <= (GUARD32 if meta[META_FLOAT32] != 0 else GUARD)


@_jit
def _sums_proven(meta, m):
    """True unless a float32 model has a sum longer than ``MAX_TERMS_32`` (batch or layer)."""
    if meta[META_FLOAT32] == 0:
        return True
    longest = m
    for layer in range(meta[META_LAYERS] + 1):
        longest = max(longest, meta[META_SIZES + layer] + 1)
    return longest <= MAX_TERMS_32


@_jit
def _gather(rows, cols, x_lo, x_hi, x_nom, idx):
    """Rows ``idx`` of the data box and clean data as ``rows (4, m, n0)`` and ``cols (4, n0, m)``.

    Row copies are contiguous reads (float32 data convert exactly); the
    transpose works on the small batch.
    """
    n0 = x_lo.shape[1]
    for r in range(idx.size):
        src = idx[r]
        for i in range(n0):
            rows[0, r, i] = x_lo[src, i]
        for i in range(n0):
            rows[1, r, i] = x_hi[src, i]
        for i in range(n0):
            rows[2, r, i] = x_nom[src, i]
        for i in range(n0):
            rows[3, r, i] = max(abs(rows[0, r, i]), abs(rows[1, r, i]))
    for q in range(4):
        for r in range(idx.size):
            for i in range(n0):
                cols[q, i, r] = rows[q, r, i]


@_jit
def _input_weight_grad(dw, dwt, g, rows, tiny, rn):
    """Weight gradient of a layer with many inputs: batch-ordered axpys over its input features.

    ``dwt[:, j, :] = sum_b g[:, j, b] * rows[:, b, :]`` (the inner loop runs
    over the inputs, long and contiguous), bounded by :func:`_finish`, then
    transposed into ``dw (4, n, p)``.
    """
    dwt[:] = 0.0
    for j in range(g.shape[1]):
        for b in range(g.shape[2]):
            _axpy(dwt, j, rows, b, g[0, j, b], g[1, j, b], g[2, j, b], g[3, j, b])
    _finish(dwt, g.shape[2], tiny, rn)
    for q in range(4):
        for j in range(dwt.shape[1]):
            for i in range(dwt.shape[2]):
                dw[q, i, j] = dwt[q, j, i]


@_jit
def _forward(x0, x_tiny, th, meta, wtiny, ws, rn):
    """Interval and nominal forward pass of the batch ``x0 (4, n0, m)``.

    Returns ``(end, zoff, aoff, atiny)``: layer ``l``'s pre-activation lives
    at ``ws[zoff[l]:]`` and its output (after the ReLU, or the pre-activation
    itself) at ``ws[aoff[l]:]``, both ``(4, n_l, m)``; ``atiny[l]`` is the
    tiny flag of layer ``l``'s input.
    """
    nl = meta[META_LAYERS]
    m = x0.shape[2]
    zoff = np.empty(nl, dtype=np.int64)
    aoff = np.empty(nl, dtype=np.int64)
    atiny = np.empty(nl + 1, dtype=np.bool_)
    atiny[0] = x_tiny
    o = 0
    src = x0
    for layer in range(nl):
        n, p = meta[META_SIZES + layer], meta[META_SIZES + layer + 1]
        w, b = _layer_views(th, meta, layer)
        z = ws[o : o + 4 * p * m].reshape((4, p, m))
        zoff[layer] = o
        o += 4 * p * m
        _fill_rows(z, b)
        _mm_weights(z, w, True, src)
        t = _finish(z, n + 1, atiny[layer] | wtiny[layer], rn)
        if meta[meta_relu_pos(nl, layer)] != 0:  # a ReLU follows this Linear
            a = ws[o : o + 4 * p * m].reshape((4, p, m))
            aoff[layer] = o
            o += 4 * p * m
            _relu(a, z)
            src = a
        else:
            aoff[layer] = zoff[layer]
            src = z
        atiny[layer + 1] = t
    return o, zoff, aoff, atiny


# ------------------------------------------------------------ losses


@_jit
def _bce_grad(z, y, idx, g, inv_lo, inv_hi, rn):
    """BCE-with-logits gradient bounds (and the nominal's) into ``g``; mean-loss bounds, tiny flag.

    Mirrors ``losses.BCEWithLogits``: ``(sigmoid(z) - y) / m`` and
    ``mean(softplus((1 - 2y) z))`` with ``softplus(a) = max(a, 0) +
    log1p(exp(-|a|))``.
    """
    m = z.shape[2]
    tot_lo = 0.0
    tot_hi = 0.0
    tiny = False
    for r in range(m):
        zl, zh, zn = z[0, 0, r], z[1, 0, r], z[2, 0, r]
        yb = float(y[idx[r]])
        el_l, eh_l = _exp_widened(-abs(zl), rn)
        el_h, eh_h = _exp_widened(-abs(zh), rn)
        d_lo = widen_dn(_sigmoid_lo(zl, el_l, eh_l, rn) - yb, rn)
        d_hi = widen_up(_sigmoid_hi(zh, el_h, eh_h, rn) - yb, rn)
        g_lo = widen_dn_mul(d_lo, inv_lo if d_lo >= 0.0 else inv_hi, rn)
        g_hi = widen_up_mul(d_hi, inv_hi if d_hi >= 0.0 else inv_lo, rn)
        en_l, en_h = _exp_widened(-abs(zn), rn)
        d_n = widen_dn(_sigmoid_lo(zn, en_l, en_h, rn) - yb, rn)
        g_n = widen_dn_mul(d_n, inv_lo if d_n >= 0.0 else inv_hi, rn)
        g[0, 0, r] = g_lo
        g[1, 0, r] = g_hi
        g[2, 0, r] = min(max(g_n, g_lo), g_hi)
        g[3, 0, r] = max(abs(g_lo), abs(g_hi))
        tiny |= _is_tiny(g_lo) | _is_tiny(g_hi)
        # loss: softplus of the flipped logit, lower bound at its lower end
        if yb == 1.0:
            f_lo, e_lo, f_hi, e_hi = -zh, el_h, -zl, eh_l
        else:
            f_lo, e_lo, f_hi, e_hi = zl, el_l, zh, eh_h
        v_lo = widen_dn(max(f_lo, 0.0) + _log1p_bounds(e_lo)[0], rn)
        v_hi = widen_up(max(f_hi, 0.0) + _log1p_bounds(e_hi)[1], rn)
        tot_lo = widen_dn(tot_lo + v_lo, rn)
        tot_hi = widen_up(tot_hi + v_hi, rn)
    loss_lo = widen_dn_mul(tot_lo, inv_lo if tot_lo >= 0.0 else inv_hi, rn)
    loss_hi = widen_up_mul(tot_hi, inv_hi if tot_hi >= 0.0 else inv_lo, rn)
    return loss_lo, loss_hi, tiny


@_jit
def _ce_grad(z, y, idx, g, inv_lo, inv_hi, rn):
    """Cross-entropy gradient bounds (and the nominal's) into ``g``; mean-loss bounds, tiny flag.

    Mirrors ``losses.CrossEntropy``: ``S_i = sum_{j != i} exp(z_j - z_i)``
    with the tight pairing (upper ``S_i`` from ``hi_j - lo_i``, lower from
    ``lo_j - hi_i``), ``p_i = 1 / (1 + S_i)``, gradient ``(p - onehot) / m``,
    loss ``log1p(S_y)``.
    """
    k, m = z.shape[1], z.shape[2]
    tot_lo = 0.0
    tot_hi = 0.0
    tiny = False
    for r in range(m):
        yr = y[idx[r]]
        for i in range(k):
            s_lo = 0.0
            s_hi = 0.0
            s_n = 0.0
            for j in range(k):
                if j == i:
                    continue
                s_hi = widen_up(s_hi + _exp_hi(widen_up(z[1, j, r] - z[0, i, r], rn), rn), rn)
                s_lo = widen_dn_sum_pos(
                    s_lo + _exp_lo(widen_dn(z[0, j, r] - z[1, i, r], rn), rn), rn
                )
                s_n = widen_up(s_n + _exp_bounds(widen_up(z[2, j, r] - z[2, i, r], rn))[1], rn)
            # any other order of the k - 1 nonnegative terms: relative error <= k rn[2]
            s_hi = widen_up(s_hi * (1.0 + k * rn[2]), rn)
            s_lo = max(widen_dn(s_lo * (1.0 - k * rn[2]), rn), 0.0)
            p_lo = max(widen_dn_div(1.0, widen_up(1.0 + s_hi, rn), rn), 0.0)
            p_hi = min(widen_up_div(1.0, widen_dn(1.0 + s_lo, rn), rn), 1.0)
            p_n = max(widen_dn_div(1.0, widen_up(1.0 + s_n, rn), rn), 0.0)
            oh = 1.0 if i == yr else 0.0
            d_lo = widen_dn(p_lo - oh, rn)
            d_hi = widen_up(p_hi - oh, rn)
            d_n = widen_dn(p_n - oh, rn)
            g_lo = widen_dn_mul(d_lo, inv_lo if d_lo >= 0.0 else inv_hi, rn)
            g_hi = widen_up_mul(d_hi, inv_hi if d_hi >= 0.0 else inv_lo, rn)
            g_n = widen_dn_mul(d_n, inv_lo if d_n >= 0.0 else inv_hi, rn)
            g[0, i, r] = g_lo
            g[1, i, r] = g_hi
            g[2, i, r] = min(max(g_n, g_lo), g_hi)
            g[3, i, r] = max(abs(g_lo), abs(g_hi))
            tiny |= _is_tiny(g_lo) | _is_tiny(g_hi)
            if i == yr:
                tot_lo = widen_dn(tot_lo + _log1p_bounds(s_lo)[0], rn)
                tot_hi = widen_up(tot_hi + _log1p_bounds(s_hi)[1], rn)
    loss_lo = widen_dn_mul(tot_lo, inv_lo if tot_lo >= 0.0 else inv_hi, rn)
    loss_hi = widen_up_mul(tot_hi, inv_hi if tot_hi >= 0.0 else inv_lo, rn)
    return loss_lo, loss_hi, tiny


# ------------------------------------------------------------ update


@_jit
def _update(theta, grad, lam_lo, lam_hi, lam_n, rn):
    """``theta <- theta - lambda grad`` outward, the nominal in RN; ``(finite, first outside)``.

    ``theta`` and ``grad`` have the planes (lo, hi, nom, ...) over the same
    flattened elements.  float32: the new bounds are rounded outward to
    float32 and the nominal to nearest, which keeps it inside (RN32 is
    monotone and fixes the float32 bounds).
    """
    finite = True
    bad = -1
    tl, th, tn, tm = theta[0], theta[1], theta[2], theta[3]
    gl_, gh_, gn_ = grad[0], grad[1], grad[2]
    for t in range(tl.size):
        gl, gh = gl_[t], gh_[t]
        step_lo = widen_dn_mul(gl, lam_lo if gl >= 0.0 else lam_hi, rn)
        step_hi = widen_up_mul(gh, lam_hi if gh >= 0.0 else lam_lo, rn)
        lo = widen_dn(tl[t] - step_hi, rn)
        hi = widen_up(th[t] - step_lo, rn)
        nom = tn[t] - lam_n * gn_[t]
        if rn[3]:
            lo = to32_rd(lo, 0.0)
            hi = to32_ru(hi, 0.0)
            nom = np.float64(np.float32(nom))
        tl[t] = lo
        th[t] = hi
        tn[t] = nom
        tm[t] = max(abs(lo), abs(hi))
        finite &= (abs(lo) <= F64_MAX) & (abs(hi) <= F64_MAX)
        if bad < 0 and not (lo <= nom <= hi):
            bad = t
    return finite, bad


# ------------------------------------------------------------ entry points


@_jit
def train_step(x_lo, x_hi, x_nom, y, idx, th, ws, meta, scal, out):
    """One fused FullCert SGD step on the rows ``idx`` of the data; updates ``th`` in place.

    ``x_lo, x_hi, x_nom (N, n0)``: the data box and the clean data (the
    nominal model's), float32 or float64.  ``th``: per Linear layer ``W (4, n,
    p)`` then ``b (4, p)`` with planes lo, hi, nominal, magnitude.  ``meta``
    (int64): ``[L, loss, float32, x_tiny, n_0..n_L, relu_1..relu_L,
    offsets_1..L, x_nonneg]``.  ``scal``: ``[lam_lo, lam_hi, lam_nominal,
    1/m lo, 1/m hi, max |x|]``.  ``out``: ``[status, loss_lo, loss_hi,
    finite, outside layer, outside element, outside is bias]``; status
    ``DECLINED`` = 1: nothing changed, take the layered path.  The positions
    by name: :mod:`intervalnn.kernels.fused_layout`.
    """
    nl = meta[META_LAYERS]
    m = idx.size
    lam_lo, lam_hi, lam_n = scal[SCAL_RATE_LO], scal[SCAL_RATE_HI], scal[SCAL_RATE_NOM]
    rn = widening_unit(meta[META_FLOAT32] != 0)
    big, wtiny = _prepare(th, meta)
    if not (_no_overflow(meta, m, big, scal[SCAL_X_MAG], lam_hi) and _sums_proven(meta, m)):
        out[OUT_STATUS] = DECLINED
        return
    n0 = meta[META_SIZES]
    x0 = ws[0 : 4 * n0 * m].reshape((4, n0, m))
    rows = ws[4 * n0 * m : 8 * n0 * m].reshape((4, m, n0))
    _gather(rows, x0, x_lo, x_hi, x_nom, idx)
    base = 8 * n0 * m
    o, zoff, aoff, atiny = _forward(x0, meta[META_TINY] != 0, th, meta, wtiny, ws[base:], rn)
    o += base
    nmax = 0
    for layer in range(nl + 1):
        nmax = max(nmax, meta[META_SIZES + layer])
    nk = meta[META_SIZES + nl]
    gbuf = (o, o + 4 * nmax * m)
    o += 8 * nmax * m
    tmp = ws[o : o + 4 * m].reshape((4, m))
    o += 4 * m
    g = ws[gbuf[0] : gbuf[0] + 4 * nk * m].reshape((4, nk, m))
    oz = base + aoff[nl - 1]
    logits = ws[oz : oz + 4 * nk * m].reshape((4, nk, m))
    inv_lo, inv_hi = scal[SCAL_INV_M_LO], scal[SCAL_INV_M_HI]
    if meta[META_LOSS] == BCE:
        loss_lo, loss_hi, gtiny = _bce_grad(logits, y, idx, g, inv_lo, inv_hi, rn)
    else:
        loss_lo, loss_hi, gtiny = _ce_grad(logits, y, idx, g, inv_lo, inv_hi, rn)
    if meta[meta_relu_pos(nl, nl - 1)] != 0:  # a ReLU after the last Linear: through its derivative
        oz = base + zoff[nl - 1]
        _relu_mask(g, ws[oz : oz + 4 * nk * m].reshape((4, nk, m)))
    finite = True
    out[OUT_OUTSIDE_LAYER] = -1.0
    cur = 0
    for layer in range(nl - 1, -1, -1):
        n, p = meta[META_SIZES + layer], meta[META_SIZES + layer + 1]
        w, b = _layer_views(th, meta, layer)
        if layer == 0:
            a, a_tiny, a_nonneg = x0, meta[META_TINY] != 0, meta[meta_nonneg_pos(nl)] != 0
        else:
            oa = base + aoff[layer - 1]
            a = ws[oa : oa + 4 * n * m].reshape((4, n, m))
            a_tiny, a_nonneg = atiny[layer], meta[meta_relu_pos(nl, layer - 1)] != 0
        # weight and bias gradients: sums over the batch
        dw = ws[o : o + 4 * n * p].reshape((4, n, p))
        if layer == 0 and n >= 32 and n > p:  # many inputs: vectorise over them
            dwt = ws[o + 4 * n * p + 4 * p : o + 8 * n * p + 4 * p].reshape((4, p, n))
            _input_weight_grad(dw, dwt, g, rows, a_tiny | gtiny, rn)
        else:
            _outer_sums(dw, a, a_nonneg, g, tmp)
            _finish(dw, m, a_tiny | gtiny, rn)
        db = ws[o + 4 * n * p : o + 4 * n * p + 4 * p].reshape((4, 1, p))
        for q in range(4):
            for j in range(p):
                db[q, 0, j] = _sum4(g[q, j], m)
        _finish(db, m, False, rn)
        # input gradient with the old W, before the update
        if layer > 0:
            nxt = gbuf[1 - cur]
            gx = ws[nxt : nxt + 4 * n * m].reshape((4, n, m))
            gx[:] = 0.0
            _mm_weights(gx, w, False, g)
            gtiny_next = _finish(gx, p, gtiny | wtiny[layer], rn)
        wf, dwf = w.reshape((4, n * p)), dw.reshape((4, n * p))
        f_w, bad_w = _update(wf, dwf, lam_lo, lam_hi, lam_n, rn)
        f_b, bad_b = _update(b, db.reshape((4, p)), lam_lo, lam_hi, lam_n, rn)
        finite &= f_w & f_b
        if bad_w >= 0 or bad_b >= 0:
            out[OUT_OUTSIDE_LAYER] = layer
            out[OUT_OUTSIDE_INDEX] = bad_w if bad_w >= 0 else bad_b
            out[OUT_OUTSIDE_BIAS] = 0.0 if bad_w >= 0 else 1.0
        if layer > 0:
            if meta[meta_relu_pos(nl, layer - 1)] != 0:
                oz = base + zoff[layer - 1]
                _relu_mask(gx, ws[oz : oz + 4 * n * m].reshape((4, n, m)))
            g, gtiny, cur = gx, gtiny_next, 1 - cur
    out[OUT_STATUS] = 0.0
    out[OUT_LOSS_LO] = loss_lo
    out[OUT_LOSS_HI] = loss_hi
    out[OUT_FINITE] = 1.0 if finite else 0.0


@_jit
def forward(xs, th, meta, x_mag, ws, out):
    """Interval (and nominal) logits of every column of ``xs (4, n0, N)`` into ``out (4, K, N)``.

    Returns False (``out`` untouched) where the overflow guard declines.
    """
    nl = meta[META_LAYERS]
    rn = widening_unit(meta[META_FLOAT32] != 0)
    big, wtiny = _prepare(th, meta)
    m = xs.shape[2]
    if not (_no_overflow(meta, m, big, x_mag, 0.0) and _sums_proven(meta, 1)):
        return False
    o, zoff, aoff, atiny = _forward(xs, meta[META_TINY] != 0, th, meta, wtiny, ws, rn)
    k = meta[META_SIZES + nl]
    out[:] = ws[aoff[nl - 1] : aoff[nl - 1] + 4 * k * m].reshape((4, k, m))
    return True


@_jit
def data_flags(x_lo, x_hi):
    """``(max(|lo|, |hi|), tiny flag, all lo >= 0)`` of a data box, in one pass."""
    big = 0.0
    tiny = False
    nonneg = True
    for r in range(x_lo.shape[0]):
        for i in range(x_lo.shape[1]):
            lo, hi = np.float64(x_lo[r, i]), np.float64(x_hi[r, i])
            v = max(abs(lo), abs(hi))
            big = v if not (v <= big) else big
            tiny |= _is_tiny(lo) | _is_tiny(hi)
            nonneg &= lo >= 0.0
    return big, tiny, nonneg


@_jit
def widths(th, meta, out):
    """``RU(hi - lo)`` of each parameter (tightest, in the model's dtype), ``named_params`` order.

    Per layer the weight (row-major) then the bias, like ``Interval.width``.
    """
    nl = meta[META_LAYERS]
    f32 = meta[META_FLOAT32] != 0
    t = 0
    for layer in range(nl):
        w, b = _layer_views(th, meta, layer)
        for plane in (w.reshape((4, -1)), b):
            for e in range(plane.shape[1]):
                lo, hi = plane[0, e], plane[1, e]
                out[t] = _r.add_ru32(hi, -lo) if f32 else _r.add_ru64(hi, -lo)
                t += 1


def workspace_size(sizes, relu, m: int) -> int:
    """Floats of workspace that :func:`train_step` / :func:`forward` need for ``m`` rows."""
    acts = sum((2 if r else 1) * 4 * m * n for n, r in zip(sizes[1:], relu, strict=True))
    pairs = max(n * p for n, p in zip(sizes[:-1], sizes[1:], strict=True))
    return 8 * m * sizes[0] + acts + 8 * m * max(sizes) + 4 * m + 8 * pairs + 4 * max(sizes)
