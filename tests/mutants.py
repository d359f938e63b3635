#!/usr/bin/env python3
"""Mutation check of the soundness-critical code: every mutant below must be killed.

``make mutants`` (or ``python tests/mutants.py``) applies each mutation of
:data:`MUTANTS` to a scratch copy of the package and runs the tests listed for
it there.  A mutant is *killed* when pytest fails (exit status 1) on an
assertion or an error the mutated code raises; passing tests mean the suite
does not pin that decision down.  A mutant whose code does not even compile
(a Numba ``TypingError``, a ``SyntaxError``, ...) is *broken*: its snippet
needs fixing.  The script prints one line per mutant (status, seconds, name,
what it changes; for a kill, the first failing test) and exits 1 unless every
mutant is killed.  Each snippet must occur exactly once in its file, checked
before anything runs: when the library changes, fix the snippet.

How the scratch copy is imported, not the editable install of the checkout:
the installed package maps ``intervalnn.kernels`` -> ``kernels/`` and
``intervalnn.cli`` -> ``cli/`` (setuptools ``package-dir``), so each scratch
directory gets the plain layout ``pkg/intervalnn/{kernels,cli}`` and the tests
run with ``PYTHONPATH=pkg``.  Path entries come before the editable finder
(it is appended to ``sys.meta_path``), and since ``intervalnn.kernels`` is then
found inside the scratch package, the finder's mapping is never consulted; a
bootstrap checks ``__file__`` of all three packages before pytest starts and
refuses to run otherwise.

Numba caches: each run gets its own ``NUMBA_CACHE_DIR``.  Numba keys a cache
entry by its own source file only, so a cached caller in another file would
keep a mutated callee's old code.  The unmutated sanity run compiles every
kernel once; a mutant's cache starts as a copy of that, minus every entry of
the mutated kernel module and of the kernel modules that import it
(transitively: ``rounding`` -> ``elementary`` -> ``cpu``, ``fused``, ...).  The
copied files keep their modification times, so the remaining entries are
valid.  ``--cold`` starts every mutant from an empty cache instead.

Usage: ``python tests/mutants.py [-j JOBS] [-k SUBSTRING] [--list] [--cold]
[--known-survivors]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H = "tests/test_harness.py"
R = "tests/test_regressions.py"
T = "tests/test_mutants.py"
P = "tests/test_poisoning.py"
C = "tests/test_conv_layers.py"
F = "tests/test_prefix.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # path in the checkout: intervalnn/..., kernels/... or cli/...
    original: str  # must occur exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest arguments (files or node ids), relative to the root
    description: str


def p(*names: str) -> tuple[str, ...]:
    """Tests of tests/test_poisoning.py by function name (all their parametrizations)."""
    return tuple(f"{P}::{n}" for n in names)


def t(*names: str) -> tuple[str, ...]:
    """Tests of tests/test_mutants.py by function name (all their parametrizations)."""
    return tuple(f"{T}::{n}" for n in names)


MUTANTS: list[Mutant] = [
    # ------------------------------------------------ the audit's survivors
    Mutant(
        "linalg-k-eta-zero",
        "kernels/gemm.py",
        "up(2 * k * eta), up(2 * k * eta)",
        "0.0, 0.0",
        t("test_gemm_underflow_terms_long_inner_dimension"),
        "GEMM error bound without the k*eta underflow terms",
    ),
    Mutant(
        "certify-margin-ge-0",
        "intervalnn/certify.py",
        "CertificationResult(margin[0] > 0,",
        "CertificationResult(margin[0] >= 0,",
        t(
            "test_certify_never_certifies_a_zero_margin",
            "test_certify_never_certifies_two_tied_logits",
            "test_certify_margin_exactly_zero_on_the_layered_path",
            "test_fused_trainer_certify_never_certifies_a_zero_margin",
        ),
        "certify() and training validation (one code path) certify a margin of exactly 0",
    ),
    Mutant(
        "optim-rate-nearest",
        "intervalnn/optim.py",
        "lam = Interval._exact(rate, theta)",
        "lam = Interval(theta.backend.xp.asarray(theta.dtype.type(float(rate))))",
        t(
            "test_sgd_step_encloses_the_exact_learning_rate_at_zero_parameters",
            "test_training_at_eps0_encloses_exact_sgd",
        ),
        "layered SGD: learning rate rounded to nearest (a point) instead of outward",
    ),
    Mutant(
        "fused-rate-bounds-nearest",
        "intervalnn/engine/fused.py",
        "lo, hi = enclose_real(rate, dt)",
        "lo = hi = dt.type(float(rate))",
        t(
            "test_fused_rate_bounds_enclose_the_exact_rate",
            "test_training_at_eps0_encloses_exact_sgd",
        ),
        "fused SGD: learning rate rounded to nearest instead of outward",
    ),
    Mutant(
        "fused-update-lam-hi-for-lam-lo",
        "kernels/fused.py",
        "step_lo = widen_dn_mul(gl, lam_lo if gl >= 0.0 else lam_hi",
        "step_lo = widen_dn_mul(gl, lam_hi if gl >= 0.0 else lam_hi",
        t(
            "test_fused_update_uses_the_lower_rate_for_the_upper_bound",
            "test_training_at_eps0_encloses_exact_sgd",
        ),
        "fused update: the upper bound's step takes the upper learning rate",
    ),
    Mutant(
        "fused-update-hi-not-rounded-up",
        "kernels/fused.py",
        "hi = widen_up(th[t] - step_lo, rn)",
        "hi = th[t] - step_lo",
        t(
            "test_fused_update_rounds_both_bounds_outward",
            "test_training_at_eps0_encloses_exact_sgd",
        ),
        "fused update: upper bound left in round-to-nearest",
    ),
    Mutant(
        "losses-bce-flip-swapped",
        "intervalnn/losses.py",
        "xp.where(one, -z.hi, z.lo), xp.where(one, -z.lo, z.hi)",
        "xp.where(one, -z.lo, z.lo), xp.where(one, -z.hi, z.hi)",
        t("test_bce_loss_value_and_gradient_bounds_against_mpfr"),
        "layered BCE loss value: flipped logit's endpoints paired the wrong way",
    ),
    Mutant(
        "exp-bracket-tolerance-zero",
        "kernels/elementary.py",
        "a, b = _bracket(h, l, abs(h) * (2.0 * EXP_DELTA))",
        "a, b = _bracket(h, l, 0.0)",
        t("test_exp_log_at_hard_to_round_arguments"),
        "exp: the double-double value's error ignored when choosing the bracket's side",
    ),
    Mutant(
        "certify-binary-margin-wrong-endpoint",
        "intervalnn/certify.py",
        "np.where(y == 1, lo[:, 0], -hi[:, 0])",
        "np.where(y == 1, hi[:, 0], -lo[:, 0])",
        t("test_certify_binary_margin_uses_the_certain_endpoint"),
        "binary certification reads the possible instead of the certain logit bound",
    ),
    # ------------------------------------------------ further soundness-critical decisions
    Mutant(
        "rounding-two-sum-sign",
        "kernels/rounding.py",
        "step = (e < 0) | ((s == INF)",
        "step = (e > 0) | ((s == INF)",
        t("test_directed_rounding_of_sums_and_products_against_fractions"),
        "float64 lower sum: TwoSum error sign inverted",
    ),
    Mutant(
        "rounding-fma-residual-sign",
        "kernels/rounding.py",
        "return _down64(p, r < 0), _up64(p, r > 0), abs(p) >= _TINY",
        "return _down64(p, r < 0), _up64(p, r < 0), abs(p) >= _TINY",
        t("test_directed_rounding_of_sums_and_products_against_fractions"),
        "float64 upper product: FMA residual sign inverted",
    ),
    Mutant(
        "interval-sum-error-quartered",
        "intervalnn/interval.py",
        "g = 2 * bounds.sum_error_factor(n - 1, self.dtype)",
        "g = bounds.sum_error_factor(n - 1, self.dtype) / 2",
        t("test_interval_sum_error_bound_with_accumulating_roundings"),
        "Interval.sum: half the single-order rounding-error bound",
    ),
    Mutant(
        "ball-radius-nearest",
        "intervalnn/interval.py",
        "return xp.asarray(bounds.enclose_real(radius, dtype)[1], dtype=dtype)",
        "return xp.asarray(float(radius), dtype=dtype)",
        t("test_ball_radius_rounds_up"),
        "ball / threat-model radius rounded to nearest instead of up",
    ),
    Mutant(
        "linalg-point-shortcut-any",
        "kernels/gemm.py",
        "return (lo, None) if bool(xp.all(lo == hi)) else kern.midrad(lo, hi)",
        "return (lo, None) if bool(xp.any(lo == hi)) else kern.midrad(lo, hi)",
        t("test_gemm_point_operand_shortcut_needs_every_entry_a_point"),
        "GEMM takes the point-operand shortcut when only some entries are points",
    ),
    Mutant(
        "gemm-zero-radius-any",
        "kernels/gemm.py",
        "a_point = ra is None or not bool(xp.any(ra))",
        "a_point = ra is None or not bool(xp.all(ra))",
        (C,),
        "midpoint-radius GEMM: a factor with some zero radii is taken for a point",
    ),
    Mutant(
        "gemm-member-overflow-unchecked",
        "kernels/gemm.py",
        "return not bound < float(np.finfo(ma.dtype).max)",
        "return False",
        ("tests/test_matmul.py", C),
        "GEMM: a member's float product that may overflow keeps a finite bound",
    ),
    Mutant(
        "fused-finish-drops-error",
        "kernels/fused.py",
        "lo[t] = widen_dn(lo[t] - mag[t]",
        "lo[t] = widen_dn(lo[t]",
        t("test_fused_forward_dot_product_rounding_error_bound"),
        "fused dot products: lower bound without the summation error term",
    ),
    Mutant(
        "fused-finish-drops-underflow",
        "kernels/fused.py",
        "extra = (2 * nterms + 1) *",
        "extra = 0.0 *",
        t("test_fused_forward_underflowing_products"),
        "fused dot products: no allowance for underflowing products",
    ),
    Mutant(
        "fused-overflow-guard-reads-nominals",
        "kernels/fused.py",
        "wm = w[0].reshape(-1), w[1].reshape(-1), w[3].reshape(-1)",
        "wm = w[0].reshape(-1), w[1].reshape(-1), w[2].reshape(-1)",
        t("test_fused_overflow_guard_reads_the_magnitude_plane")
        + (
            "tests/test_regressions.py::test_item2_overflow_guard_reads_magnitudes_not_nominals_certify",
        ),
        "fused overflow guard reads the signed nominal weights instead of their magnitudes",
    ),
    Mutant(
        "fused-relu-mask-undecided-active",
        "kernels/fused.py",
        "gl[t] = x if zl[t] > 0.0 else",
        "gl[t] = x if zh[t] > 0.0 else",
        t("test_training_with_poisoning_encloses_exact_sgd_of_sampled_datasets"),
        "fused ReLU backward: undecided sign treated as active (lower bound)",
    ),
    Mutant(
        "layers-relu-mask-undecided-active",
        "intervalnn/layers.py",
        "active, inactive = z.lo > 0, z.hi <= 0",
        "active, inactive = z.hi > 0, z.hi <= 0",
        t("test_training_with_poisoning_encloses_exact_sgd_of_sampled_datasets"),
        "layered ReLU backward: undecided sign treated as active",
    ),
    Mutant(
        "losses-batch-factor-nearest",
        "intervalnn/losses.py",
        "return Interval._exact(Fraction(1, m), like)",
        "return Interval._exact(float(like.dtype.type(1 / m)), like)",
        t("test_loss_gradient_batch_factor_encloses_one_over_m"),
        "loss gradients: 1/m rounded to nearest instead of outward",
    ),
    Mutant(
        "fused-bce-loss-flip-swapped",
        "kernels/fused.py",
        "f_lo, e_lo, f_hi, e_hi = -zh, el_h, -zl, eh_l",
        "f_lo, e_lo, f_hi, e_hi = -zl, eh_l, -zh, el_h",
        t("test_fused_bce_gradient_and_loss_bounds_against_mpfr"),
        "fused BCE loss bounds: flipped logit's endpoints paired the wrong way",
    ),
    Mutant(
        "fused-ce-lower-sum-pairing",
        "kernels/fused.py",
        "_exp_lo(widen_dn(z[0, j, r] - z[1, i, r]",
        "_exp_lo(widen_dn(z[1, j, r] - z[0, i, r]",
        t("test_fused_ce_gradient_and_loss_bounds_against_mpfr"),
        "fused softmax: lower sum pairs upper z_j with lower z_i",
    ),
    Mutant(
        "log-bracket-tolerance-2^-20",
        "kernels/elementary.py",
        "return _bracket(h, l, abs(h) * (2.0 * LOG_DELTA))\n\n\n"
        "@njit(cache=True)\ndef _log1p_bounds",
        "return _bracket(h, l, abs(h) * (2.0 * LOG_DELTA) * 2.0**-20)\n\n\n"
        "@njit(cache=True)\ndef _log1p_bounds",
        t("test_exp_log_at_hard_to_round_arguments"),
        "log: bracketing tolerance 2^20 times too small",
    ),
    Mutant(
        "expm1-bracket-tolerance-2^-20",
        "kernels/elementary.py",
        "a, b = _bracket(h, l, abs(h) * (2.0 * EXPM1_DELTA))",
        "a, b = _bracket(h, l, abs(h) * (2.0 * EXPM1_DELTA) * 2.0**-20)",
        t("test_exp_log_at_hard_to_round_arguments"),
        "expm1: bracketing tolerance 2^20 times too small",
    ),
    # ------------------------------------------------ the review's bugs, undone
    Mutant(
        "fused-trailing-relu-ignored",
        "kernels/fused.py",
        "if meta[meta_relu_pos(nl, nl - 1)] != 0:  # a ReLU after the last Linear",
        "if False:  # a ReLU after the last Linear",
        (
            f"{H}::test_exact_sgd_from_box_members_stays_in_the_box",
            f"{R}::test_item1_fused_step_through_a_relu_after_the_last_linear",
        ),
        "bug 1: the fused step ignores a ReLU after the last Linear layer",
    ),
    Mutant(
        "float32-unit-is-float64",
        "kernels/rounding.py",
        "return UNIT32 if f32 else UNIT64",
        "return UNIT64",
        (f"{H}::test_float_sgd_in_any_summation_order_stays_in_the_box",),
        "fused float32 steps widen by float64 units: float32 SGD escapes the box",
    ),
    Mutant(
        "integer-operands-rounded-to-nearest",
        "intervalnn/interval.py",
        "return Interval._new(pts, pts.copy()).astype(like.dtype)",
        "return Interval._new(pts.astype(like.dtype), pts.astype(like.dtype))",
        (f"{R}::test_item3_integer_operands_are_enclosed_not_rounded_in_float32",),
        "bug 3: NumPy integer operands rounded to nearest in float32",
    ),
    Mutant(
        "box-around-rounded-data",
        "intervalnn/threat.py",
        "return Interval.ball(x.astype(wide), eps, domain=self.domain).astype(dtype)",
        "return Interval.ball(x.astype(dtype), eps, domain=self.domain)",
        (f"{R}::test_item4_float64_inputs_are_enclosed_by_a_float32_models_box",),
        "bug 4: float64 data rounded to a float32 model's dtype before its box is built",
    ),
    Mutant(
        "labels-unchecked",
        "intervalnn/certify.py",
        "    check_labels(y, model.out_features)\n",
        "",
        (f"{R}::test_item5_labels_outside_the_models_classes_are_refused",),
        "bug 5: certify() accepts labels outside the model's classes",
    ),
    Mutant(
        "ce-overflowing-sum-unclamped",
        "intervalnn/losses.py",
        "return Interval._new(xp.maximum(s.lo, 0).astype(z.dtype), s.hi)",
        "return s",
        (f"{R}::test_item6_layered_cross_entropy_with_overflowing_logit_differences",),
        "bug 6: an overflowing softmax sum gets lower bound -inf (ZeroDivisionError)",
    ),
    Mutant(
        "ball-checks-the-midpoint",
        "intervalnn/interval.py",
        "if bool(((center.lo < lo_d) | (center.lo > hi_d)).any()):",
        "if bool(((box.mid < lo_d) | (box.mid > hi_d)).any()):",
        (f"{R}::test_item7_ball_accepts_points_on_the_domain_edge",),
        "bug 7: ball() checks its midpoint, not x, against the domain",
    ),
    Mutant(
        "layers-bias-added-after-the-gemm",
        "intervalnn/layers.py",
        "return concatenate([x, ones], axis=-1) @ concatenate([self.weight, bias_row], axis=0)",
        "return x @ self.weight + self.bias",
        (f"{R}::test_layered_forward_contains_a_float_sum_that_adds_the_bias_first",),
        "layered Linear: the bias outside the GEMM bound (float sums adding it first escape)",
    ),
    # ------------------------------------------------ issue 13: k-of-n poisoning and training rules
    Mutant(
        "poisoning-k-minus-1-terms",
        "intervalnn/poisoning.py",
        "low, high = _select(low, high, b, e, attack[sel], k)",
        "low, high = _select(low, high, b, e, attack[sel], k - 1 if k > 1 else k)",
        p(
            "test_batch_gradient_accumulation_against_brute_force",
            "test_adversarial_poisonings_stay_in_the_box",
        ),
        "k-of-n accumulation: k' - 1 deviation terms selected instead of k'",
    ),
    Mutant(
        "poisoning-deviation-lo-nearest",
        "intervalnn/poisoning.py",
        "d_lo = xp.minimum(kern.add_rd(e.lo, -b.lo), 0)",
        "d_lo = xp.minimum(e.lo - b.lo, 0)",
        p("test_select_against_brute_force_over_subsets"),
        "k-of-n accumulation: lower deviations rounded to nearest, not down",
    ),
    Mutant(
        "poisoning-deviation-hi-nearest",
        "intervalnn/poisoning.py",
        "d_hi = xp.maximum(kern.add_ru(e.hi, -b.hi), 0)",
        "d_hi = xp.maximum(e.hi - b.hi, 0)",
        p("test_select_against_brute_force_over_subsets"),
        "k-of-n accumulation: upper deviations rounded to nearest, not up",
    ),
    Mutant(
        "poisoning-deviation-lo-not-clamped",
        "intervalnn/poisoning.py",
        "d_lo = xp.minimum(kern.add_rd(e.lo, -b.lo), 0)",
        "d_lo = kern.add_rd(e.lo, -b.lo)",
        p("test_select_against_brute_force_over_subsets"),
        "k-of-n accumulation: lower deviations not clamped at 0 (a positive one may be selected)",
    ),
    Mutant(
        "poisoning-deviation-hi-not-clamped",
        "intervalnn/poisoning.py",
        "d_hi = xp.maximum(kern.add_ru(e.hi, -b.hi), 0)",
        "d_hi = kern.add_ru(e.hi, -b.hi)",
        p("test_select_against_brute_force_over_subsets"),
        "k-of-n accumulation: upper deviations not clamped at 0",
    ),
    Mutant(
        "poisoning-norm-factor-hi-from-norm-hi",
        "intervalnn/poisoning.py",
        "n_lo = Interval(xp.maximum(norm.lo, gamma.hi))",
        "n_lo = Interval(xp.maximum(norm.hi, gamma.hi))",
        p("test_clipping_boxes_contain_clipped_members_exactly_and_in_float"),
        "norm clipping: the factor's upper end from the norm's upper end (too small)",
    ),
    Mutant(
        "optim-momentum-drops-mu",
        "intervalnn/optim.py",
        "v = Interval._exact(mu, theta) * velocity[0][name] + g",
        "v = velocity[0][name] + g",
        p("test_training_rules_stay_in_the_box"),
        "momentum: the box's velocity v + g instead of mu v + g",
    ),
    Mutant(
        "poisoning-paired-min-budget",
        "intervalnn/poisoning.py",
        "return Plan(clean, (True, True), min(max(kf, kl), attackable))",
        "return Plan(clean, (True, True), min(min(kf, kl), attackable))",
        p(
            "test_batch_gradient_contains_every_admissible_assignment",
            "test_adversarial_poisonings_stay_in_the_box",
        ),
        "paired budgets: k' = min(kf, kl) instead of max(kf, kl)",
    ),
    Mutant(
        "poisoning-independent-max-budget",
        "intervalnn/poisoning.py",
        "return Plan(clean, (True, True), min(kf + kl, attackable))",
        "return Plan(clean, (True, True), min(max(kf, kl), attackable))",
        p("test_batch_gradient_contains_every_admissible_assignment"),
        "independent budgets: k' = max(kf, kl) instead of kf + kl",
    ),
    Mutant(
        "poisoning-free-rows-bound-half-gamma",
        "intervalnn/poisoning.py",
        "bound = self.clipping.entry_bound(size, any_box.dtype)",
        "bound = self.clipping.gamma / 2",
        p("test_unbounded_poisoning_with_clipping_stays_in_the_box"),
        "eps = inf: a moved row's clipped gradient bounded by gamma / 2",
    ),
    Mutant(
        "kofn-select-k-minus-1-terms",
        "kernels/kofn.py",
        "for p in range(c):\n                    acc = r.add_rd(acc, w[j, p])",
        "for p in range(c - 1 if c == k else c):\n                    acc = r.add_rd(acc, w[j, p])",
        p("test_outer_kofn_against_brute_force_over_subsets"),
        "fused k-of-n (selection): k' - 1 lower deviation terms summed instead of k'",
    ),
    Mutant(
        "kofn-deviation-lo-nearest",
        "kernels/kofn.py",
        "d = r.add_rd(elo[j], -blo[j])",
        "d = elo[j] - blo[j]",
        p("test_outer_kofn_against_brute_force_over_subsets"),
        "fused k-of-n: lower deviations rounded to nearest, not down",
    ),
    Mutant(
        "kofn-deviation-hi-nearest",
        "kernels/kofn.py",
        "u = r.add_ru(ehi[j], -bhi[j])",
        "u = ehi[j] - bhi[j]",
        p("test_outer_kofn_against_brute_force_over_subsets"),
        "fused k-of-n: upper deviations rounded to nearest, not up",
    ),
    Mutant(
        "kofn-deviation-lo-not-clamped",
        "kernels/kofn.py",
        "elo[j] = d if d < zero else zero",
        "elo[j] = d if d == d else zero",
        p("test_outer_kofn_against_brute_force_over_subsets"),
        "fused k-of-n: lower deviations not clamped at 0",
    ),
    Mutant(
        "kofn-deviation-hi-not-clamped",
        "kernels/kofn.py",
        "ehi[j] = u if u > zero else zero",
        "ehi[j] = u if u == u else zero",
        p("test_outer_kofn_against_brute_force_over_subsets"),
        "fused k-of-n: upper deviations not clamped at 0",
    ),
    Mutant(
        "kofn-list-k-minus-1-terms",
        "kernels/kofn.py",
        "kl = k if mode == LIST else 1",
        "kl = (k - 1 if k > 1 else 1) if mode == LIST else 1",
        p(
            "test_outer_kofn_against_brute_force_over_subsets",
            "test_batch_gradient_contains_every_admissible_assignment",
        ),
        "fused k-of-n (sorted-list selection): k' - 1 deviations kept and summed",
    ),
    # ------------------------------------------------ image layers and frozen prefixes
    Mutant(
        "maxpool-candidate-strict",
        "intervalnn/conv.py",
        "candidate = patches.hi >= floor",
        "candidate = patches.hi > floor",
        (C,),
        "max-pool backward: a position whose upper bound only ties the floor is no candidate",
    ),
    Mutant(
        "maxpool-hull-never",
        "intervalnn/conv.py",
        "alone = (candidate.sum(axis=(4, 5), keepdims=True) == 1)[..., 0, 0]",
        "alone = (candidate.sum(axis=(4, 5), keepdims=True) >= 1)[..., 0, 0]",
        (C,),
        "max-pool backward: every candidate takes the whole gradient (no hull with 0)",
    ),
    Mutant(
        "avgpool-backward-rounded-to-nearest",
        "intervalnn/conv.py",
        "share = g / self._count",
        "share = Interval._new(g.lo / self._count, g.hi / self._count)",
        (C,),
        "avg-pool backward: the gradient's share divided in round-to-nearest",
    ),
    Mutant(
        "prefix-clean-features-nominal",
        "intervalnn/engine/__init__.py",
        "clean_features = features(prefix, clean if clean is not None else Interval(x))",
        "clean_features = Interval(nominal_features(prefix, x))",
        (F, "tests/test_audit_cnn.py"),
        "frozen prefix: the clean rows' features are the nominal float features (a point), "
        "not the box of their real values",
    ),
    Mutant(
        "prefix-poisoned-features-clean",
        "intervalnn/engine/__init__.py",
        "else features(prefix, box)",
        "else features(prefix, Interval(x))",
        (F, C),
        "frozen prefix: the poisoned data's feature box is the clean data's",
    ),
]

# Mutants of the audit that no test can kill any more (see the docstrings of
# the tests named): run them with --known-survivors to watch them survive.
KNOWN_SURVIVORS: list[Mutant] = [
    Mutant(
        "exp-bracket-tolerance-2^-10",
        "kernels/elementary.py",
        "a, b = _bracket(h, l, abs(h) * (2.0 * EXP_DELTA))",
        "a, b = _bracket(h, l, abs(h) * (2.0 * EXP_DELTA) * 2.0**-10)",
        t("test_exp_log_at_hard_to_round_arguments"),
        "exp: bracketing tolerance 2^10 times too small (unsound only by the proof: "
        "the double-double error stays below the distance to the nearest float at "
        "every known hard case)",
    ),
    Mutant(
        "fused-ce-sum-not-rounded-up",
        "kernels/fused.py",
        "s_hi = widen_up(s_hi + _exp_hi(widen_up(z[1, j, r] - z[0, i, r], rn), rn), rn)",
        "s_hi = s_hi + _exp_hi(widen_up(z[1, j, r] - z[0, i, r], rn), rn)",
        t(
            "test_fused_ce_gradient_one_step_k3_to_10",
            "test_fused_ce_gradient_and_loss_bounds_against_mpfr",
        ),
        "fused softmax: upper sum left in round-to-nearest (absorbed by the any-order "
        "factor 1 + K rn[2] applied after the sum)",
    ),
]

BOOT = """
import os, sys
root = sys.argv[1]
import intervalnn, intervalnn.cli, intervalnn.kernels
for mod in (intervalnn, intervalnn.kernels, intervalnn.cli):
    if not os.path.abspath(mod.__file__).startswith(root + os.sep):
        sys.exit(f"mutants.py: {mod.__name__} imported from {mod.__file__}, not from {root}")
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
KILLED, SURVIVED, BROKEN = "killed", "SURVIVED", "BROKEN"
# A failure with one of these means the mutated code does not even compile or import:
# the mutant's snippet needs fixing (it counts as not killed).
BROKEN_BY = ("TypingError", "SyntaxError", "NameError", "ImportError", "UnboundLocalError")


def scratch_path(file: str) -> str:
    """Where a checkout file lives in the scratch layout."""
    top, _, rest = file.partition("/")
    return {
        "intervalnn": "pkg/intervalnn/",
        "kernels": "pkg/intervalnn/kernels/",
        "cli": "pkg/intervalnn/cli/",
    }[top] + rest


def snapshot(dst: Path) -> Path:
    """The checkout's package, tests and pyproject.toml in the scratch layout (times kept)."""
    dst.mkdir(parents=True)
    shutil.copytree(ROOT / "intervalnn", dst / "pkg/intervalnn", ignore=IGNORE)
    shutil.copytree(ROOT / "kernels", dst / "pkg/intervalnn/kernels", ignore=IGNORE)
    shutil.copytree(ROOT / "cli", dst / "pkg/intervalnn/cli", ignore=IGNORE)
    shutil.copytree(ROOT / "tests", dst / "tests", ignore=IGNORE)
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def mutated(m: Mutant, src: Path) -> str:
    """The text of ``m.file`` in the snapshot ``src`` with the mutation applied."""
    text = (src / scratch_path(m.file)).read_text()
    count = text.count(m.original)
    if count != 1:
        raise SystemExit(
            f"mutant {m.name}: snippet found {count} times in {m.file}: {m.original!r}"
        )
    return text.replace(m.original, m.replacement)


def kernel_dependents(module: str, kernels: Path) -> set[str]:
    """``module`` and every kernel module that imports it, transitively."""
    imports = {}
    for f in kernels.glob("*.py"):
        src = f.read_text()
        imports[f.stem] = set(re.findall(r"^from \. import (\w+)", src, re.M)) | set(
            re.findall(r"^from \.(\w+) import", src, re.M)
        )
    out, grew = {module}, True
    while grew:
        new = {m for m, deps in imports.items() if deps & out} - out
        out |= new
        grew = bool(new)
    return out


def cache_subdir(kernels: Path) -> str:
    from numba.core.caching import UserProvidedCacheLocator

    return UserProvidedCacheLocator.get_suitable_cache_subpath(str(kernels / "fused.py"))


def seed_cache(base_scratch: Path, base_cache: Path, m: Mutant, scratch: Path, cache: Path) -> None:
    """Copy the sanity run's kernel cache, dropping what the mutant may have changed."""
    src = base_cache / cache_subdir(base_scratch / "pkg/intervalnn/kernels")
    if not src.is_dir():
        return
    dst = cache / cache_subdir(scratch / "pkg/intervalnn/kernels")
    shutil.copytree(src, dst)
    if m.file.startswith("kernels/"):
        stale = kernel_dependents(Path(m.file).stem, scratch / "pkg/intervalnn/kernels")
        for f in dst.iterdir():
            if f.name.split(".", 1)[0] in stale:
                f.unlink()


def scratch_env(scratch: Path, cache: Path) -> dict:
    env = dict(os.environ)
    pkg = str(scratch / "pkg")
    env["PYTHONPATH"] = pkg + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["NUMBA_CACHE_DIR"] = str(cache)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["COLUMNS"] = "1000"  # pytest's summary lines unabridged (see failure())
    env.pop("PYTEST_ADDOPTS", None)
    return env


def imported_from(scratch: Path, cache: Path) -> str:
    """Where ``intervalnn`` and its kernels are imported from with the scratch environment."""
    code = "import intervalnn.kernels.fused as f, intervalnn as i; print(i.__file__, f.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=scratch,
        env=scratch_env(scratch, cache),
        capture_output=True,
        text=True,
    )
    return (proc.stdout + proc.stderr).strip()


def run_tests(scratch: Path, cache: Path, tests, timeout: float):
    args = ["-q", "-x", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", *tests]
    cmd = [sys.executable, "-c", BOOT, str(scratch / "pkg"), *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=scratch,
            env=scratch_env(scratch, cache),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, "timed out"
    return proc.returncode, proc.stdout + proc.stderr


def failure(out: str) -> str:
    """``test name: exception type`` of pytest's first FAILED summary line."""
    for line in out.splitlines():
        if line.startswith("FAILED "):
            node, _, why = line[len("FAILED ") :].partition(" - ")
            return f"{node.split('::')[-1]}: {why.split(':')[0][:60]}"
    return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-j", "--jobs", type=int, default=2, help="mutants run in parallel (default 2)")
    ap.add_argument("-k", dest="select", default="", help="only mutants whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--cold", action="store_true", help="every mutant compiles from an empty cache")
    ap.add_argument(
        "--known-survivors", action="store_true", help="run the known survivors instead"
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directories")
    opts = ap.parse_args(argv)
    mutants = KNOWN_SURVIVORS if opts.known_survivors else MUTANTS
    mutants = [m for m in mutants if opts.select in m.name]
    if opts.list:
        for m in mutants:
            print(f"{m.name:36s} {m.file:24s} {m.description}")
        return 0
    if not mutants:
        print("no mutant selected")
        return 1
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="intervalnn-mutants-"))
    try:
        # One snapshot of the checkout for every run (the library may change under us);
        # every snippet must be found in it before anything runs.
        src = snapshot(work / "src")
        for m in mutants:
            mutated(m, src)
        all_tests = sorted({x for m in mutants for x in m.tests})
        base = work / "base"
        shutil.copytree(src, base)
        base_cache = work / "base-cache"
        print(f"imports: {imported_from(base, base_cache)}", flush=True)
        rc, out = run_tests(base, base_cache, all_tests, opts.timeout)
        verdict = "passes" if rc == 0 else "FAILS"
        print(
            f"sanity: the unmutated copy {verdict} ({time.perf_counter() - t0:.0f} s)", flush=True
        )
        if rc != 0:
            print(out[-4000:])
            return 1

        def one(i_m):
            i, m = i_m
            start = time.perf_counter()
            scratch = work / f"m{i:02d}"
            shutil.copytree(src, scratch)
            cache = work / f"m{i:02d}-cache"
            if not opts.cold:
                seed_cache(base, base_cache, m, scratch, cache)
            (scratch / scratch_path(m.file)).write_text(mutated(m, src))
            rc, out = run_tests(scratch, cache, m.tests, opts.timeout)
            if not opts.keep:
                shutil.rmtree(scratch, ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)
            status = KILLED if rc == 1 else SURVIVED if rc == 0 else f"ERROR (pytest status {rc})"
            if rc == 1 and any(e in failure(out) for e in BROKEN_BY):
                status = BROKEN
            took = time.perf_counter() - start
            line = f"{status:10s} {took:5.0f} s  {m.name:38s} {m.description}"
            if rc == 1:
                line += f"\n{'':19s}failed: {failure(out)}"
            print(line, flush=True)
            if status != KILLED and rc != 0:
                print(out[-3000:], flush=True)
            return status

        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            statuses = list(pool.map(one, enumerate(mutants)))
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    alive = sum(s != KILLED for s in statuses)
    print(
        f"{len(statuses) - alive} of {len(statuses)} mutants killed"
        f"{f', {alive} not' if alive else ''}; {time.perf_counter() - t0:.0f} s in all"
    )
    return 1 if alive else 0


if __name__ == "__main__":
    sys.exit(main())
