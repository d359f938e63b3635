// Elementary functions in double-double (read by kernels/gpu_elementary.py).
INN_EL double inn_el_tab(const unsigned long long *t, int i) {
    return __longlong_as_double((long long)__ldg(t + i));
}

// ---- error-free transformations and dd arithmetic (elementary.py D1-D3)
INN_EL void inn_el_two_sum(double a, double b, double &s, double &e) {
    s = a + b;
    double bb = s - a;
    e = (a - (s - bb)) + (b - bb);
}
INN_EL void inn_el_fast_two_sum(double a, double b, double &s, double &e) {
    s = a + b;
    e = b - (s - a);
}
INN_EL void inn_el_two_prod(double a, double b, double &p, double &e) {
    p = a * b;
    e = fma(a, b, -p);
}
INN_EL void inn_el_dd_mul(double ah, double al, double bh, double bl, double &ch, double &cl) {
    double p, e;
    inn_el_two_prod(ah, bh, p, e);
    e += ah * bl + al * bh;
    inn_el_fast_two_sum(p, e, ch, cl);
}
INN_EL void inn_el_dd_add(double ah, double al, double bh, double bl, double &ch, double &cl) {
    double s, e;
    inn_el_two_sum(ah, bh, s, e);
    e += al + bl;
    inn_el_two_sum(s, e, ch, cl);
}
INN_EL void inn_el_dd_div(double nh, double nl, double dh, double dl, double &qh, double &ql) {
    double q1 = nh / dh, p, pe;
    inn_el_two_prod(q1, dh, p, pe);
    double r = (((nh - p) - pe) + nl) - q1 * dl;
    inn_el_fast_two_sum(q1, r / dh, qh, ql);
}

// ---- exact operations on the encoding
// next64 / prev64 of elementary.py (zero counts as -0 going down, +0 going up).
INN_EL double inn_el_next(double x) {
    long long i = (x == 0.0) ? 0LL : __double_as_longlong(x);
    i = (i < 0) ? i - 1 : i + 1;
    return (x == INN_EL_INF) ? x : __longlong_as_double(i);
}
INN_EL double inn_el_prev(double x) {
    long long i = (x == 0.0) ? (long long)0x8000000000000000ULL : __double_as_longlong(x);
    i = (i < 0) ? i + 1 : i - 1;
    return (x == -INN_EL_INF) ? x : __longlong_as_double(i);
}
// 2^n for -1022 <= n <= 1023.
INN_EL double inn_el_pow2(int n) {
    return __longlong_as_double((long long)(n + 1023) << 52);
}
// a 2^n, exact whenever that is representable (or overflows to +-inf, as
// ldexp does).  One product by 2^n is exact then; for |n| > 1022 the two
// halves: every caller's intermediate a 2^(n/2) is normal (elementary.py's
// ldexp calls: |a| in [2^-62, 4] with n <= 1024 or n >= -1076 on an integer
// a < 2^56, ml = al 2^-e with al = 0 or |ml| >= 2^-113, 2^-q; tanh: 0 <= n <= 56).
INN_EL double inn_el_ldexp(double a, int n) {
    if (n >= -1022 && n <= 1023) return a * inn_el_pow2(n);
    int n1 = n / 2;
    return (a * inn_el_pow2(n1)) * inn_el_pow2(n - n1);
}
// math.frexp for finite x > 0: m in [1/2, 1) with x = m 2^e.
INN_EL double inn_el_frexp(double x, int &e) {
    int adj = 0;
    long long b = __double_as_longlong(x);
    if ((b >> 52) == 0) {  // subnormal: scale by 2^54 (exact)
        x *= INN_EL_TWO54;
        adj = 54;
        b = __double_as_longlong(x);
    }
    e = (int)(b >> 52) - 1022 - adj;
    return __longlong_as_double((b & 0x000fffffffffffffLL) | 0x3fe0000000000000LL);
}

// ---- elementary.py _bracket and _scale
INN_EL void inn_el_bracket(double h, double l, double eps, double &a, double &b) {
    if (l >= eps) {
        a = h; b = inn_el_next(h);
    } else if (l <= -eps) {
        a = inn_el_prev(h); b = h;
    } else {
        a = inn_el_prev(h); b = inn_el_next(h);
    }
}
INN_EL void inn_el_scale(double a, double b, int q, double &lo, double &hi) {
    if (q < -1020) {
        int s = q + 1074;
        lo = inn_el_ldexp(floor(inn_el_ldexp(a, s)), -1074);
        hi = inn_el_ldexp(ceil(inn_el_ldexp(b, s)), -1074);
        return;
    }
    lo = inn_el_ldexp(a, q);
    if (lo == INN_EL_INF) lo = INN_EL_MAX;
    hi = inn_el_ldexp(b, q);
}

// ---- exp / expm1 (elementary.py _reduce, _expm1_reduced, _exp_dd, _expm1_dd)
INN_EL int inn_el_reduce(double x, double &rh, double &rl) {
    double k = floor(x * INN_EL_INVL + 0.5);
    double t, te, p, pe, s, se;
    inn_el_two_sum(x, -(k * INN_EL_L1), t, te);
    inn_el_two_prod(k, INN_EL_L2, p, pe);
    inn_el_two_sum(t, -p, s, se);
    double lo = ((te + se) - pe) - k * INN_EL_L3;
    inn_el_two_sum(s, lo, rh, rl);
    return (int)k;
}
INN_EL void inn_el_expm1_reduced(double rh, double rl, double &h, double &l) {
    double t = (((INN_EL_F11 * rh + INN_EL_F10) * rh + INN_EL_F9) * rh + INN_EL_F8) * rh
               + INN_EL_F7;
    double ph, pl;
    inn_el_dd_mul(t, 0.0, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_F6H, INN_EL_F6L, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_F5H, INN_EL_F5L, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_F4H, INN_EL_F4L, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_F3H, INN_EL_F3L, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, 0.5, 0.0, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, 1.0, 0.0, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, h, l);
}
INN_EL int inn_el_exp_dd(double x, double &h, double &l) {
    double rh, rl, eh, el, gh, gl;
    int k = inn_el_reduce(x, rh, rl);
    inn_el_expm1_reduced(rh, rl, eh, el);
    inn_el_dd_add(1.0, 0.0, eh, el, gh, gl);
    int j = k & 63;
    inn_el_dd_mul(inn_el_tab(inn_el_th, j), inn_el_tab(inn_el_tl, j), gh, gl, h, l);
    return (k - j) / 64;  // k >> 6 (floor), exactly
}
INN_EL int inn_el_expm1_dd(double x, double &h, double &l) {
    double rh, rl, eh, el;
    int k = inn_el_reduce(x, rh, rl);
    inn_el_expm1_reduced(rh, rl, eh, el);
    if (k == 0) {
        h = eh; l = el;
        return 0;
    }
    int j = k & 63;
    int q = (k - j) / 64;
    double th = inn_el_tab(inn_el_th, j), tl = inn_el_tab(inn_el_tl, j);
    double ah, al, bh, bl;
    inn_el_dd_mul(th, tl, eh, el, ah, al);
    inn_el_dd_add(th, tl, -inn_el_ldexp(1.0, -q), 0.0, bh, bl);
    inn_el_dd_add(ah, al, bh, bl, h, l);
    return q;
}
INN_EL void inn_el_exp(double x, double &lo, double &hi) {
    if (x != x) { lo = hi = x; return; }
    if (x == 0.0) { lo = hi = 1.0; return; }
    if (fabs(x) < INN_EL_TINY_ARG) {
        if (x > 0.0) { lo = 1.0; hi = inn_el_next(1.0); }
        else { lo = inn_el_prev(1.0); hi = 1.0; }
        return;
    }
    if (x > INN_EL_EXP_HI) {
        lo = (x == INN_EL_INF) ? INN_EL_INF : INN_EL_MAX; hi = INN_EL_INF;
        return;
    }
    if (x < INN_EL_EXP_LO) {
        lo = 0.0; hi = (x == -INN_EL_INF) ? 0.0 : INN_EL_SMALLEST;
        return;
    }
    double h, l, a, b;
    int q = inn_el_exp_dd(x, h, l);
    inn_el_bracket(h, l, fabs(h) * INN_EL_EXP_TOL, a, b);
    inn_el_scale(a, b, q, lo, hi);
}
INN_EL void inn_el_expm1(double x, double &lo, double &hi) {
    if (x != x || x == 0.0) { lo = hi = x; return; }
    if (fabs(x) < INN_EL_TINY_ARG) { lo = x; hi = inn_el_next(x); return; }
    if (x > INN_EL_EXP_HI) {
        lo = (x == INN_EL_INF) ? INN_EL_INF : INN_EL_MAX; hi = INN_EL_INF;
        return;
    }
    if (x < INN_EL_EXPM1_LO) {
        lo = -1.0; hi = (x == -INN_EL_INF) ? -1.0 : inn_el_next(-1.0);
        return;
    }
    double h, l, a, b;
    int q = inn_el_expm1_dd(x, h, l);
    inn_el_bracket(h, l, fabs(h) * INN_EL_EXPM1_TOL, a, b);
    inn_el_scale(a, b, q, lo, hi);
}

// ---- log / log1p (elementary.py _log_dd, _log_bounds, _log1p_bounds)
INN_EL void inn_el_log_dd(double ah, double al, double &h, double &l) {
    int e;
    double f = inn_el_frexp(ah, e);
    if (f < INN_EL_SQRT_HALF) {
        f *= 2.0;
        e -= 1;
    }
    double ml = inn_el_ldexp(al, -e);
    int i = (int)floor((f - 1.0) * 64.0 + 0.5);
    double c = 1.0 + (double)i * 0.015625;
    double nh, nl, sh, sl, dh, dl, s_h, s_l, wh, wl, ph, pl;
    inn_el_two_sum(f - c, ml, nh, nl);
    inn_el_two_sum(f, c, sh, sl);
    inn_el_fast_two_sum(sh, sl + ml, dh, dl);
    inn_el_dd_div(nh, nl, dh, dl, s_h, s_l);
    inn_el_dd_mul(s_h, s_l, s_h, s_l, wh, wl);
    double t = (INN_EL_A13 * wh + INN_EL_A11) * wh + INN_EL_A9;
    inn_el_dd_mul(t, 0.0, wh, wl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_A7H, INN_EL_A7L, ph, pl);
    inn_el_dd_mul(ph, pl, wh, wl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_A5H, INN_EL_A5L, ph, pl);
    inn_el_dd_mul(ph, pl, wh, wl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_A3H, INN_EL_A3L, ph, pl);
    inn_el_dd_mul(ph, pl, wh, wl, ph, pl);
    inn_el_dd_add(ph, pl, 1.0, 0.0, ph, pl);
    inn_el_dd_mul(s_h, s_l, ph, pl, h, l);
    h = 2.0 * h;
    l = 2.0 * l;
    if (i != 0) {
        inn_el_dd_add(inn_el_tab(inn_el_lch, i + 19), inn_el_tab(inn_el_lcl, i + 19), h, l, h, l);
    }
    if (e != 0) {
        double fe = (double)e, eh, el;
        inn_el_two_prod(fe, INN_EL_LN2H, eh, el);
        inn_el_fast_two_sum(eh, el + fe * INN_EL_LN2L, eh, el);
        inn_el_dd_add(eh, el, h, l, h, l);
    }
}
INN_EL void inn_el_log(double x, double &lo, double &hi) {
    if (!(x > 0.0)) {
        lo = hi = (x == 0.0) ? -INN_EL_INF : __longlong_as_double(0x7ff8000000000000LL);
        return;
    }
    if (x == INN_EL_INF) { lo = hi = INN_EL_INF; return; }
    if (x == 1.0) { lo = hi = 0.0; return; }
    double h, l;
    inn_el_log_dd(x, 0.0, h, l);
    inn_el_bracket(h, l, fabs(h) * INN_EL_LOG_TOL, lo, hi);
}
INN_EL void inn_el_log1p(double x, double &lo, double &hi) {
    if (!(x >= -1.0)) { lo = hi = __longlong_as_double(0x7ff8000000000000LL); return; }
    if (x == -1.0) { lo = hi = -INN_EL_INF; return; }
    if (x == INN_EL_INF) { lo = hi = INN_EL_INF; return; }
    if (x == 0.0) { lo = hi = x; return; }
    if (fabs(x) < INN_EL_TINY_ARG) { lo = inn_el_prev(x); hi = x; return; }
    double ah, al, h, l;
    inn_el_two_sum(1.0, x, ah, al);
    inn_el_log_dd(ah, al, h, l);
    inn_el_bracket(h, l, fabs(h) * INN_EL_LOG_TOL, lo, hi);
}

// ---- tanh (elementary.py _tanh_dd, _tanh_bounds)
INN_EL void inn_el_tanh(double x, double &lo, double &hi) {
    if (x != x || x == 0.0) { lo = hi = x; return; }
    double t = fabs(x), a, b;
    if (t < INN_EL_TANH_TINY) {
        a = inn_el_prev(t); b = t;
    } else if (t > INN_EL_TANH_SAT) {
        a = (t == INN_EL_INF) ? 1.0 : inn_el_prev(1.0); b = 1.0;
    } else {
        double h, l, eh, el, dh, dl;
        int q = inn_el_expm1_dd(2.0 * t, h, l);
        eh = inn_el_ldexp(h, q);
        el = inn_el_ldexp(l, q);
        inn_el_dd_add(eh, el, 2.0, 0.0, dh, dl);
        inn_el_dd_div(eh, el, dh, dl, h, l);
        inn_el_bracket(h, l, h * INN_EL_TANH_TOL, a, b);
    }
    if (x > 0.0) { lo = a; hi = b; } else { lo = -b; hi = -a; }
}
