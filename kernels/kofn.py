"""The k-of-n batch gradient bound of one Linear layer's weight, from per-sample factors.

A Linear layer's per-sample weight gradient is the outer product of the
row's input ``a_s`` (``in``) and output gradient ``g_s`` (``out``), times the
row's clipping factor ``f_s`` (norm clipping; 1 otherwise).
:func:`outer_kofn` bounds the batch gradient under at most ``k`` poisoned
rows (AGT's accumulation; :mod:`intervalnn.poisoning` has the threat model)
per coordinate ``(i, j)`` straight from those factors, without the ``(b, in,
out)`` per-sample gradients.  The bias is the same call with ``a`` a column
of ones.

Semantics, per coordinate ``(i, j)`` and row ``s`` (``RD``/``RU``/``RN``:
rounding down / up / to nearest in the arrays' dtype; products of intervals
are IEEE 1788's tightest with ``0 * inf = 0``)::

    base_s  = clamp([f_s] * ([a_s,i] * [g_s,j]))       ([-bound, bound] if free[s])
    extra_s = the same from (ea, eg, ef, efree)
    S       = [sum_s base_s.lo, sum_s base_s.hi]       (sequential, RD / RU after each add)
    d_s     = min(RD(extra_s.lo - base_s.lo), 0)       (attack[s]; else 0; NaN -> 0)
    u_s     = max(RU(extra_s.hi - base_s.hi), 0)
    D       = [RD-sum of the k smallest d_s, RU-sum of the k largest u_s]
    out     = [RD(S.lo + D.lo), RU(S.hi + D.hi)] * [inv_lo, inv_hi]
    out_nom = RN(sum_s n_s) * inv_nom,  n_s = clamp(RN(nf_s * RN(na_s,i * ng_s,j)))

``clamp`` clips to ``[-gamma, gamma]`` (exact; none when ``gamma = 0``); a
lower sum that meets ``+inf + -inf`` is ``-inf``, an upper one ``+inf``;
``RD(x - (-inf))`` is ``+inf`` or NaN, so ``d_s = 0`` where ``base_s.lo =
-inf`` (and ``u_s = 0`` where ``base_s.hi = +inf``), as AGT's rule says.

Proof of soundness (real values).  Preconditions: the boxes hold the real
inputs ``a``, ``g``, ``f`` of every row (``f >= 0``), and a ``free`` row's
real clipped gradient lies in ``[-bound, bound]``.  (i) Row boxes: ``f a g``
is trilinear, so its range over a box is the hull of the vertex products;
the sign-case formulas pick those extremes and round them outward (``RD`` /
``RU`` of each endpoint product, ``rounding.mul_bounds`` with the exact
scalar ``mul_rd``/``mul_ru`` where that fast path is not valid), and ``0 *
inf = 0`` is the infimum/supremum over the reals of a product with a zero
factor.  ``clamp`` is monotone and applied exactly to both ends.  So every
real ``clamp(f_s a_s g_s)`` lies in ``base_s`` (``extra_s`` for a poisoned
row).  (ii) For a poisoned set ``P`` of at most ``k`` attackable rows and
reals ``x_s`` in ``base_s`` (``s`` not in ``P``), ``y_s`` in ``extra_s``
(``s`` in ``P``): if some ``base_s.lo = -inf`` then ``S.lo = -inf`` (an
``RD`` sum with a ``-inf`` term is ``-inf`` or NaN, and NaN is read as
``-inf``) and the lower end is trivially sound.  Otherwise ``sum_{s not in
P} x_s + sum_{s in P} y_s >= sum_s base_s.lo + sum_{s in P} (extra_s.lo -
base_s.lo) >= S.lo + sum_{s in P} d_s`` (a sequential ``RD`` sum is at most
the exact sum, step by step; each ``d_s`` is at most its difference and at
most 0), and a sum over at most ``k`` of the ``d_s <= 0`` is at least the
sum of the ``k`` smallest, which is at least its ``RD`` sum in any order.  A
row with ``base_s.lo = +inf`` holds no real, so it is in ``P`` and its
``d_s = -inf`` (or there is no real configuration at all); ``S.lo + D.lo``
is then NaN, read as ``-inf``.  The upper end is the mirror image.  The
final product with ``[inv_lo, inv_hi] ∋ 1/m`` (``inv_lo > 0``) takes the
endpoint the sign calls for, rounded outward.

Proof that the nominal lies inside (float values).  Preconditions: ``na``,
``ng``, ``nf`` lie in the base boxes (and a free row's ``n_s`` in
``[-bound, bound]``), ``inv_nom`` in ``[inv_lo, inv_hi]``, and ``out_nom``
is not NaN (the float nominal meets no ``0 * inf`` or ``inf - inf``).
``RN(x) >= RD(x)`` and ``RD`` is monotone, so ``RN(na ng) >= RD(min vertex
product)``, the lower end of the box of ``[a] * [g]``; the same step for
``nf`` and then the monotone ``clamp`` give ``n_s >= base_s.lo``.  By
induction over the rows, in the same order: ``t_s = RN(t_{s-1} + n_s) >=
RD(L_{s-1} + base_s.lo) = L_s`` (a NaN ``L_s`` is ``-inf``).  So ``T >=
S.lo >= RD(S.lo + D.lo)`` (``D.lo <= 0``), and ``RN(T inv_nom) >= RD(T
inv_nom) >=`` the outward product's lower end.  The upper end mirrors it.

NaN: products follow ``0 * inf = 0``, differences are clamped with a
comparison that maps NaN to 0, sums read NaN as the infinite bound, and the
final factor is finite and positive; so ``out_lo``/``out_hi`` are never NaN
for valid boxes (``lo <= hi``, no NaN, ``f_lo >= 0``).  ``out_nom`` is the
float nominal and is NaN exactly where its IEEE evaluation is.

Speed.  Rows are summed sequentially per coordinate (the nominal argument
needs the order); the loops over ``j`` vectorise.  Coordinates ``i`` are
split across the shared thread pool (``cpu.run_parts``).  The ``k`` extreme
deviations are selected per coordinate either by a sorted list of the
``k`` most extreme so far (small ``k``; a row touches it only when it
beats the list's last entry, rare once the list is full) or, for larger
``k``, by storing the negative deviations and running Wirth's selection per
coordinate (``O(b)``); with ``k >=`` the attackable rows every deviation is
summed.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import cpu
from . import rounding as r
from .bounds import enclose_real

_MIN_PARALLEL = 1 << 15  # rows x in x out below which one thread does all
_LIST_MAX_K = 24  # the sorted insertion beats selection up to about this k (wide outputs)
_NARROW = 8  # outputs narrower than this run transposed

NONE, ALL, LIST, SELECT, AUTO = 0, 1, 2, 3, 4
SELECTIONS = {"all": ALL, "list": LIST, "select": SELECT}

_jit = njit(cache=True, nogil=True)


@njit(cache=True, nogil=True, inline="always")
def _mulb(x, y, zero):
    """``(RD(x y), RU(x y), ok)``; ``0 * anything = 0``; redo with mul_rd/mul_ru where not ok."""
    lo, hi, ok = r.mul_bounds(x, y)
    z = (x == zero) | (y == zero)
    return (zero if z else lo), (zero if z else hi), ok | z


@_jit
def _row_box(a0, a1, glo, ghi, f0, f1, gamma, zero, lo, hi, bad):
    """``clamp([f0, f1] * ([a0, a1] * [glo_j, ghi_j]))`` for every ``j``, into ``lo``, ``hi``."""
    n = lo.size
    redo = False
    if a0 >= zero:
        for j in range(n):
            g0, g1 = glo[j], ghi[j]
            lo[j], _, ok0 = _mulb(a0 if g0 >= zero else a1, g0, zero)
            _, hi[j], ok1 = _mulb(a1 if g1 >= zero else a0, g1, zero)
            bad[j] = not (ok0 & ok1)
            redo |= bad[j]
        if redo:
            for j in range(n):
                if bad[j]:
                    g0, g1 = glo[j], ghi[j]
                    lo[j] = r.mul_rd(a0 if g0 >= zero else a1, g0)
                    hi[j] = r.mul_ru(a1 if g1 >= zero else a0, g1)
    elif a1 <= zero:
        for j in range(n):
            g0, g1 = glo[j], ghi[j]
            lo[j], _, ok0 = _mulb(a0 if g1 >= zero else a1, g1, zero)
            _, hi[j], ok1 = _mulb(a1 if g0 >= zero else a0, g0, zero)
            bad[j] = not (ok0 & ok1)
            redo |= bad[j]
        if redo:
            for j in range(n):
                if bad[j]:
                    g0, g1 = glo[j], ghi[j]
                    lo[j] = r.mul_rd(a0 if g1 >= zero else a1, g1)
                    hi[j] = r.mul_ru(a1 if g0 >= zero else a0, g0)
    else:  # a0 < 0 < a1: lo = min(a0 g1, a1 g0), hi = max(a0 g0, a1 g1)
        for j in range(n):
            g0, g1 = glo[j], ghi[j]
            l1, _, ok0 = _mulb(a0, g1, zero)
            l2, _, ok1 = _mulb(a1, g0, zero)
            _, h1, ok2 = _mulb(a0, g0, zero)
            _, h2, ok3 = _mulb(a1, g1, zero)
            lo[j] = min(l1, l2)
            hi[j] = max(h1, h2)
            bad[j] = not (ok0 & ok1 & ok2 & ok3)
            redo |= bad[j]
        if redo:
            for j in range(n):
                if bad[j]:
                    g0, g1 = glo[j], ghi[j]
                    lo[j] = min(r.mul_rd(a0, g1), r.mul_rd(a1, g0))
                    hi[j] = max(r.mul_ru(a0, g0), r.mul_ru(a1, g1))
    if not (f0 == 1 and f1 == 1):  # [f0, f1] * [p0, p1] with f0 >= 0
        redo = False
        for j in range(n):
            p0, p1 = lo[j], hi[j]
            l0, _, ok0 = _mulb(f0 if p0 >= zero else f1, p0, zero)
            _, h1, ok1 = _mulb(f1 if p1 >= zero else f0, p1, zero)
            ok = ok0 & ok1
            lo[j] = l0 if ok else p0  # flagged entries keep [p0, p1] for the exact pass
            hi[j] = h1 if ok else p1
            bad[j] = not ok
            redo |= bad[j]
        if redo:
            for j in range(n):
                if bad[j]:
                    p0, p1 = lo[j], hi[j]
                    lo[j] = r.mul_rd(f0 if p0 >= zero else f1, p0)
                    hi[j] = r.mul_ru(f1 if p1 >= zero else f0, p1)
    if gamma > zero:
        for j in range(n):
            lo[j] = min(max(lo[j], -gamma), gamma)
            hi[j] = min(max(hi[j], -gamma), gamma)


@_jit
def _smallest_first(w, c, k):
    """Rearrange ``w[:c]`` so that ``w[:k]`` holds its ``k`` smallest values (``0 < k < c``).

    Wirth's selection (Algorithms + Data Structures = Programs, 1976, 2.3.4) of
    rank ``k - 1``: on exit ``w[t] <= w[k - 1]`` for ``t < k - 1`` and
    ``w[t] >= w[k - 1]`` for ``t >= k``.
    """
    lo, hi, kk = 0, c - 1, k - 1
    while lo < hi:
        x = w[kk]
        i, j = lo, hi
        while i <= j:
            while w[i] < x:
                i += 1
            while x < w[j]:
                j -= 1
            if i <= j:
                w[i], w[j] = w[j], w[i]
                i += 1
                j -= 1
        if j < kk:
            lo = i
        if kk < i:
            hi = j


@_jit
def _kofn_rows(
    i0, i1,
    a_lo, a_hi, g_lo, g_hi, ea_lo, ea_hi, eg_lo, eg_hi,
    f_lo, f_hi, ef_lo, ef_hi, free, efree, bound,
    na, ng, nf, attack, k, mode, gamma,
    inv_lo, inv_hi, inv_nom, out_lo, out_hi, out_nom, zero, inf,
):  # fmt: skip
    """Coordinates ``i0 <= i < i1`` of :func:`outer_kofn` (``mode``: NONE, ALL, LIST, SELECT)."""
    b = a_lo.shape[0]
    n = g_lo.shape[1]
    dt = a_lo.dtype
    blo, bhi = np.empty(n, dt), np.empty(n, dt)
    elo, ehi = np.empty(n, dt), np.empty(n, dt)
    bad = np.empty(n, np.bool_)
    s_lo, s_hi, t = np.empty(n, dt), np.empty(n, dt), np.empty(n, dt)
    dl, du = np.empty(n, dt), np.empty(n, dt)
    kl = k if mode == LIST else 1
    big_l, big_u = np.empty((n, kl), dt), np.empty((n, kl), dt)
    ks = b if mode == SELECT else 1
    w, v = np.empty((n, ks), dt), np.empty((n, ks), dt)
    cw, cv = np.empty(n, np.int64), np.empty(n, np.int64)
    for i in range(i0, i1):
        s_lo[:] = zero
        s_hi[:] = zero
        t[:] = zero
        dl[:] = zero
        du[:] = zero
        big_l[:] = zero
        big_u[:] = zero
        cw[:] = 0
        cv[:] = 0
        for s in range(b):
            if free[s]:
                blo[:] = -bound
                bhi[:] = bound
            else:
                _row_box(a_lo[s, i], a_hi[s, i], g_lo[s], g_hi[s], f_lo[s], f_hi[s], gamma, zero,
                         blo, bhi, bad)  # fmt: skip
            for j in range(n):  # sequential sums; +inf + -inf reads as the infinite bound
                x = r.add_rd(s_lo[j], blo[j])
                s_lo[j] = x if x == x else -inf
                y = r.add_ru(s_hi[j], bhi[j])
                s_hi[j] = y if y == y else inf
            x, fs, ngs = na[s, i], nf[s], ng[s]
            if gamma > zero:
                for j in range(n):
                    q = fs * (x * ngs[j])
                    q = -gamma if q < -gamma else q  # NaN stays NaN, as in np.clip
                    q = gamma if q > gamma else q
                    t[j] = t[j] + q
            else:
                for j in range(n):
                    t[j] = t[j] + fs * (x * ngs[j])
            if mode == NONE or not attack[s]:
                continue
            if efree[s]:
                elo[:] = -bound
                ehi[:] = bound
            else:
                _row_box(ea_lo[s, i], ea_hi[s, i], eg_lo[s], eg_hi[s], ef_lo[s], ef_hi[s], gamma,
                         zero, elo, ehi, bad)  # fmt: skip
            for j in range(n):  # the deviations; NaN (inf - inf) compares False: 0
                d = r.add_rd(elo[j], -blo[j])
                elo[j] = d if d < zero else zero
                u = r.add_ru(ehi[j], -bhi[j])
                ehi[j] = u if u > zero else zero
            if mode == ALL:
                for j in range(n):
                    dl[j] = r.add_rd(dl[j], elo[j])
                    du[j] = r.add_ru(du[j], ehi[j])
            elif mode == LIST:  # big_l[j] ascending, big_u[j] descending: the kl extreme so far
                for j in range(n):
                    x = elo[j]
                    if x < big_l[j, kl - 1]:  # insertion sort step, rare once the list is full
                        p = kl - 1
                        while p > 0 and big_l[j, p - 1] > x:
                            big_l[j, p] = big_l[j, p - 1]
                            p -= 1
                        big_l[j, p] = x
                    y = ehi[j]
                    if y > big_u[j, kl - 1]:
                        p = kl - 1
                        while p > 0 and big_u[j, p - 1] < y:
                            big_u[j, p] = big_u[j, p - 1]
                            p -= 1
                        big_u[j, p] = y
            else:  # SELECT: keep the nonzero deviations (upper ones negated)
                for j in range(n):
                    w[j, cw[j]] = elo[j]
                    cw[j] += elo[j] < zero
                    v[j, cv[j]] = -ehi[j]
                    cv[j] += ehi[j] > zero
        if mode == LIST:
            for j in range(n):
                for p in range(kl):
                    dl[j] = r.add_rd(dl[j], big_l[j, p])
                    du[j] = r.add_ru(du[j], big_u[j, p])
        elif mode == SELECT:
            for j in range(n):
                c = cw[j]
                if c > k:
                    _smallest_first(w[j], c, k)
                    c = k
                acc = zero
                for p in range(c):
                    acc = r.add_rd(acc, w[j, p])
                dl[j] = acc
                c = cv[j]
                if c > k:
                    _smallest_first(v[j], c, k)
                    c = k
                acc = zero
                for p in range(c):
                    acc = r.add_ru(acc, -v[j, p])
                du[j] = acc
        for j in range(n):
            x = r.add_rd(s_lo[j], dl[j])
            x = x if x == x else -inf
            y = r.add_ru(s_hi[j], du[j])
            y = y if y == y else inf
            out_lo[i, j] = r.mul_rd(x, inv_lo if x >= zero else inv_hi)
            out_hi[i, j] = r.mul_ru(y, inv_hi if y >= zero else inv_lo)
            out_nom[i, j] = t[j] * inv_nom


def _check_box(name, lo, hi):
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise ValueError(f"outer_kofn: {name} holds NaN")
    if (lo > hi).any():
        raise ValueError(f"outer_kofn: {name} has lo > hi")


def outer_kofn(
    a_lo, a_hi, g_lo, g_hi, ea_lo, ea_hi, eg_lo, eg_hi,
    f_lo, f_hi, ef_lo, ef_hi, free, efree, bound,
    na, ng, nf, attack, k, gamma, inv_lo, inv_hi, inv_nom,
    out_lo, out_hi, out_nom, *, selection=None,
):  # fmt: skip
    """The k-of-n bound of one Linear layer's weight gradient into ``out_lo, out_hi, out_nom``.

    Float arrays share one dtype (float32 or float64): ``a_*``, ``ea_*``,
    ``na`` are ``(b, in)``; ``g_*``, ``eg_*``, ``ng`` are ``(b, out)``;
    ``f_*``, ``ef_*``, ``nf`` are ``(b,)`` (factors, ``f_lo >= 0``);
    ``free``, ``efree``, ``attack`` are ``(b,)`` bool; the outputs are
    C-contiguous ``(in, out)`` arrays, overwritten.  ``bound >= 0`` (rounded
    up to the dtype), ``k >= 0`` rows, ``gamma >= 0`` (0: no clamp; clamped
    at the float ``dtype(gamma)``, as the nominal is), ``0 < inv_lo <=
    inv_hi`` enclose ``1/m`` and ``inv_nom`` is the nominal's ``1/m``, all
    three exact in the dtype.  The semantics and the proofs are in the module
    docstring.  ``selection`` (``"list"`` or ``"select"``) forces the
    selection method where ``k`` is below the attackable rows (tests).
    ``ValueError`` on malformed input.
    """
    dt = np.asarray(a_lo).dtype
    if dt not in (np.float32, np.float64):
        raise ValueError(f"outer_kofn takes float32 or float64 arrays, not {dt}")
    a_lo, a_hi, g_lo, g_hi, ea_lo, ea_hi, eg_lo, eg_hi, na, ng = (
        np.ascontiguousarray(x)
        for x in (a_lo, a_hi, g_lo, g_hi, ea_lo, ea_hi, eg_lo, eg_hi, na, ng)
    )
    f_lo, f_hi, ef_lo, ef_hi, nf = (np.ascontiguousarray(x) for x in (f_lo, f_hi, ef_lo, ef_hi, nf))
    free, efree, attack = (np.ascontiguousarray(x) for x in (free, efree, attack))
    if a_lo.ndim != 2 or g_lo.ndim != 2 or a_lo.shape[0] != g_lo.shape[0]:
        raise ValueError("outer_kofn: a must be (b, in) and g (b, out) with the same b")
    (b, n_in), n_out = a_lo.shape, g_lo.shape[1]
    shapes = {
        (b, n_in): ("a_hi", a_hi, "ea_lo", ea_lo, "ea_hi", ea_hi, "na", na),
        (b, n_out): ("g_hi", g_hi, "eg_lo", eg_lo, "eg_hi", eg_hi, "ng", ng),
        (b,): ("f_lo", f_lo, "f_hi", f_hi, "ef_lo", ef_lo, "ef_hi", ef_hi, "nf", nf),
        (n_in, n_out): ("out_lo", out_lo, "out_hi", out_hi, "out_nom", out_nom),
    }
    for shape, items in shapes.items():
        for name, x in zip(items[::2], items[1::2], strict=True):
            if x.shape != shape or x.dtype != dt:
                raise ValueError(f"outer_kofn: {name} must be a {dt} array of shape {shape}")
    for name, x in (("out_lo", out_lo), ("out_hi", out_hi), ("out_nom", out_nom)):
        if not (x.flags.c_contiguous and x.flags.writeable):
            raise ValueError(f"outer_kofn: {name} must be a writeable C-contiguous array")
    for name, x in (("free", free), ("efree", efree), ("attack", attack)):
        if x.shape != (b,) or x.dtype != np.bool_:
            raise ValueError(f"outer_kofn: {name} must be a bool array of shape ({b},)")
    for name, lo, hi in (
        ("a", a_lo, a_hi), ("g", g_lo, g_hi), ("ea", ea_lo, ea_hi), ("eg", eg_lo, eg_hi),
        ("f", f_lo, f_hi), ("ef", ef_lo, ef_hi),
    ):  # fmt: skip
        _check_box(name, lo, hi)
    if (f_lo < 0).any() or (ef_lo < 0).any():
        raise ValueError("outer_kofn: clipping factors must be >= 0")
    if not (isinstance(k, int | np.integer) and k >= 0):
        raise ValueError(f"outer_kofn: k must be an integer >= 0, got {k!r}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"outer_kofn: gamma must be finite and >= 0, got {gamma}")
    if not bound >= 0:
        raise ValueError(f"outer_kofn: bound must be >= 0, got {bound}")
    inv = [dt.type(x) for x in (inv_lo, inv_hi, inv_nom)]
    if any(float(x) != float(y) for x, y in zip(inv, (inv_lo, inv_hi, inv_nom), strict=True)):
        raise ValueError(f"outer_kofn: inv_lo, inv_hi, inv_nom must be exact in {dt}")
    if not (0 < inv[0] <= inv[1] < math.inf):
        raise ValueError("outer_kofn: need 0 < inv_lo <= inv_hi < inf")
    bound = dt.type(math.inf) if math.isinf(bound) else enclose_real(float(bound), dt)[1]
    attackable = int(attack.sum())
    if k == 0 or attackable == 0:
        mode = NONE
    elif k >= attackable:
        mode = ALL
    elif selection is not None:
        if selection not in ("list", "select"):
            raise ValueError(f"outer_kofn: selection must be 'list' or 'select', not {selection!r}")
        mode = SELECTIONS[selection]
    else:
        mode = AUTO
    # The loops vectorise over out; a narrow out (e.g. 2 classes) runs transposed: the
    # interval and float products commute, so the result is the same bit for bit.
    swap = n_out < _NARROW and n_in > n_out
    outs = (out_lo, out_hi, out_nom)
    if swap:
        a_lo, a_hi, g_lo, g_hi = g_lo, g_hi, a_lo, a_hi
        ea_lo, ea_hi, eg_lo, eg_hi = eg_lo, eg_hi, ea_lo, ea_hi
        na, ng = ng, na
        n_in, n_out = n_out, n_in
        outs = tuple(np.empty((n_in, n_out), dt) for _ in range(3))
    if mode == AUTO:
        mode = LIST if k <= _LIST_MAX_K else SELECT
    args = (
        a_lo, a_hi, g_lo, g_hi, ea_lo, ea_hi, eg_lo, eg_hi, f_lo, f_hi, ef_lo, ef_hi,
        free, efree, bound, na, ng, nf, attack, int(min(k, b)), mode, dt.type(gamma),
        inv[0], inv[1], inv[2], *outs, dt.type(0), dt.type(math.inf),
    )  # fmt: skip
    threads = min(cpu.THREADS, n_in) if b * n_in * n_out >= _MIN_PARALLEL else 1
    if threads <= 1:
        _kofn_rows(0, n_in, *args)
    else:
        cuts = np.linspace(0, n_in, threads + 1).astype(int)
        parts = zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)
        cpu.run_parts((_kofn_rows, (i0, i1, *args)) for i0, i1 in parts)
    if swap:
        for dst, src in zip((out_lo, out_hi, out_nom), outs, strict=True):
            dst[...] = src.T
