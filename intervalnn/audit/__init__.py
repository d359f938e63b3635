"""Independent soundness audits of saved models and of certified training.

Nothing here trusts the engine it audits: the checks use their own code
(no :class:`~intervalnn.interval.Interval` arithmetic, no kernels) and their
own number systems.

:func:`audit_model` checks a model's certificates three ways:

a. **Exact re-verification.**  An oracle recomputes the output bounds of every
   (sampled) test point from the saved parameter box and the input box, with
   endpoint interval arithmetic in MPFR (gmpy2) at ``precision`` bits and
   directed rounding: each Linear entry is the exact minimum / maximum of the
   per-entry interval products, summed rounding down / up; ReLU by
   monotonicity.  That is the tightest interval bound propagation (IBP) up
   to ~2^-precision relative, so the engine's bounds (midpoint-radius GEMM or
   the fused endpoint kernels, each with an a-priori rounding-error term of
   ~2^-53 relative) must *contain* the oracle's; a violation is an engine
   bug.  A certificate that the oracle's bounds do not confirm is *refuted*.
b. **Falsification.**  Concrete models from the parameter box (the nominal
   model, random vertices, random interior points) meet concrete inputs
   from the test box (random vertices and interior points, and PGD attacks on
   every sampled model that push each certified margin down and every
   output towards both of its bounds).  Every output is evaluated in
   float64; a certified point whose margin reaches 0, or an output outside
   the engine's bounds, is re-evaluated exactly (rationals) before it is
   counted, so float64 rounding of the check itself never raises a false
   alarm.
c. **Rounding slack.**  The same bounds in plain round-to-nearest arithmetic
   of the model's dtype, with no directed rounding and no error terms, as
   many certified-training libraries compute them (endpoint IBP and
   midpoint-radius IBP): how many of those bounds fail to enclose the
   oracle's, how many certificates they change, and how much width
   soundness costs, in ulps.

:func:`audit_training` reruns certified training and, in lockstep, concrete
SGD on poisoned datasets inside the threat model (:func:`plan_attacks`): with
every point poisoned (FullCert) vertices, random points, all +eps / -eps;
with k of n points (``poison_count``, ``label_flips``) the k most influential
(largest clean per-sample gradient norm) and k random ones, never trusted
rows, their features moved to vertices, random points, along the sign of the
loss gradient (at the initial model, or re-poisoned at every step), or with
``epsilon = inf`` far away (1e3, 1e6) or to the domain's corners, their labels
flipped (to ``label_target``), on the same points when ``paired``.  Every run
shares the initial parameters, batch order, learning rates and training rules
(per-sample clipping, weight decay as a contraction, momentum, Nesterov, rate
decay, a fixed step count).  After every step each concrete parameter must lie
inside the interval parameters.  The float64 runs are an independent reference
implementation (:class:`Rules` are its rules); ``exact=True`` adds exact
rational SGD (gmpy2 ``mpq``; sigmoid, softmax and norm clipping via MPFR at 300
bits).  With test data the kept model is certified, and no run's final model
(the nominal model trained on that poisoned data) may misclassify a certified
point; the uncertified points the attacks flip are counted.

Both audits read Linear, Conv2d, AvgPool2d, MaxPool2d, Flatten, Unflatten
and ReLU layers by their own definitions, on flat C-order rows (Flatten and
Unflatten are then the identity; a window is an index map,
:class:`Window`): a convolution is a dense layer at every window, a mean is
the window's sum times ``1 / (kh kw)`` exactly (rationals; MPFR rounding
outward in the oracle), a maximum is monotone.  Multi-class certificates
bound the logit differences through the last Linear layer; the oracle bounds
the same differences from its own penultimate box (the exact set of
``W_c - W_j``, rounded outward at ``precision`` bits).  A frozen prefix
(``model.frozen``) is a point box: the reference SGD never steps it, and
its box and nominal values must stay the initial point at every step
(``frozen_changed``).
"""

from .falsification import falsify
from .model import EngineBounds, audit_model, engine_bounds
from .naive import naive_bounds
from .network import Conv, Dense, Pool, Window, dense_layers, network_layers
from .oracle import PRECISION, oracle_bounds
from .training import EXACT_BITS, Attack, Rules, audit_training, plan_attacks

__all__ = [
    "EXACT_BITS",
    "PRECISION",
    "Attack",
    "Conv",
    "Dense",
    "EngineBounds",
    "Rules",
    "audit_model",
    "audit_training",
    "dense_layers",
    "engine_bounds",
    "falsify",
    "naive_bounds",
    "oracle_bounds",
    "network_layers",
    "plan_attacks",
    "Pool",
    "Window",
]
