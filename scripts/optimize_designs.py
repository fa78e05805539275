"""Optimize weighted rotation designs on SO(3) and write them as package data.

A rule ``{(R_i, w_i)}`` on SO(3) is exact to degree ``t`` when
``sum_i w_i D^l(R_i) = 0`` for every ``1 <= l <= t``. Two stages:

1. Frame potential (cheap, smooth, no Wigner matrices):
   ``||sum_i w_i D^l(R_i)||_F^2 = sum_ij w_i w_j chi_l(theta_ij)`` and, with
   unit quaternions, ``chi_l(theta_ij) = U_2l(q_i . q_j)`` (Chebyshev of the
   second kind, even, so the sign of a quaternion does not matter). L-BFGS on
   ``sum_l`` of it from random points.
2. Newton polish to machine precision. The frame potential is a sum of N^2
   O(1) terms, so it cannot resolve a residual below ~1e-8; instead the
   residual is a full-rank linear image of the D-matrix sums,
   ``r_lk = sum_i w_i P_l(a_k . R_i b_k)`` over ``2 (2l+1)^2`` random probe
   pairs ``(a_k, b_k)`` per degree, driven to zero by minimum-norm
   Gauss-Newton steps in rotation vectors and weight logits.

Weights are positive (softmax of logits). Counting unknowns: N points carry
4N - 1 (3 angles each, weights summing to 1), less 6 for the left and right
rotations that map a design to a design, against ``C_t = sum_{l=1..t}
(2l+1)^2`` equations, so a weighted design needs ``N >= (C_t + 7) / 4``
(equal weights: ``(C_t + 6) / 3``). The search starts there and adds points
until the optimization converges; the count kept is the first that does.

    python scripts/optimize_designs.py                 # degrees 6..10, ~10 min on 2 cores
    python scripts/optimize_designs.py --degrees 6 7 --output /tmp/designs.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from numpy.polynomial import legendre
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "ase_symcalc" / "data" / "designs.json"


def constraint_count(t: int) -> int:
    """Real constraints of a degree-t design: sum over 1 <= l <= t of (2l+1)^2."""
    return sum((2 * l + 1) ** 2 for l in range(1, t + 1))


def lower_bound(t: int) -> int:
    """Delsarte-type bound: a t-design with t >= 2s has >= sum_{l<=s} (2l+1)^2 points."""
    s = t // 2
    return sum((2 * l + 1) ** 2 for l in range(s + 1))


def _chebyshev_u_sum(x: np.ndarray, t: int):
    """sum_{l=1..t} U_2l(x) and its derivative, by the three-term recurrence."""
    u_prev, u = np.ones_like(x), 2.0 * x  # U_0, U_1
    du_prev, du = np.zeros_like(x), np.full_like(x, 2.0)
    total, dtotal = np.zeros_like(x), np.zeros_like(x)
    for n in range(1, 2 * t):
        u_prev, u = u, 2.0 * x * u - u_prev  # U_{n+1}
        du_prev, du = du, 2.0 * u_prev + 2.0 * x * du - du_prev
        if (n + 1) % 2 == 0:
            total += u
            dtotal += du
    return total, dtotal


def _unpack(params, n):
    q = params[: 4 * n].reshape(n, 4)
    logits = params[4 * n :]
    return q, logits


def _softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


def frame_potential(params, n, t):
    """sum_l ||sum_i w_i D^l(R_i)||_F^2 and its gradient."""
    q, logits = _unpack(params, n)
    norms = np.linalg.norm(q, axis=1)
    qhat = q / norms[:, None]
    w = _softmax(logits)
    c = np.clip(qhat @ qhat.T, -1.0, 1.0)
    k, dk = _chebyshev_u_sum(c, t)
    ww = np.outer(w, w)
    value = float(np.sum(ww * k))
    grad_qhat = 2.0 * (ww * dk) @ qhat
    grad_q = (grad_qhat - np.sum(grad_qhat * qhat, axis=1)[:, None] * qhat) / norms[:, None]
    g_w = 2.0 * k @ w
    grad_logits = w * (g_w - w @ g_w)
    return value, np.concatenate([grad_q.ravel(), grad_logits])


class ProbeResiduals:
    """r_lk = sqrt(2l+1) sum_i w_i P_l(a_k . R_i b_k), with its Jacobian."""

    def __init__(self, t: int, rng: np.random.Generator, per_degree: int = 2):
        self.blocks = []
        for l in range(1, t + 1):
            count = per_degree * (2 * l + 1) ** 2
            a, b = rng.normal(size=(2, count, 3))
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            b /= np.linalg.norm(b, axis=1, keepdims=True)
            coefficients = np.zeros(l + 1)
            coefficients[l] = 1.0
            self.blocks.append((l, a, b, coefficients, legendre.legder(coefficients)))

    def __call__(self, matrices, w, jacobian=True):
        residuals, rows = [], []
        for l, a, b, coef, dcoef in self.blocks:
            x = np.einsum("ki,nij,kj->kn", a, matrices, b)  # (K, N)
            p = legendre.legval(x, coef)
            scale = math.sqrt(2 * l + 1)
            r = scale * p @ w
            residuals.append(r)
            if jacobian:
                dp = legendre.legval(x, dcoef)
                # d(a . R exp([omega]x) b)/d omega = b x (R^T a)
                rta = np.einsum("nji,kj->kni", matrices, a)  # R^T a
                axis = np.cross(b[:, None, :], rta)  # (K, N, 3)
                j_rot = scale * (dp * w)[:, :, None] * axis
                j_w = scale * w[None, :] * (p - (p @ w)[:, None])
                rows.append(np.concatenate([j_rot.reshape(len(r), -1), j_w], axis=1))
        r = np.concatenate(residuals)
        return (r, np.concatenate(rows)) if jacobian else r


def polish(matrices, w, probes, *, iterations=60, target=1e-15):
    """Minimum-norm Gauss-Newton steps with backtracking; returns the best found."""
    logits = np.log(w)
    n = len(w)
    r, jac = probes(matrices, w)
    norm = np.linalg.norm(r)
    for _ in range(iterations):
        if norm < target:
            break
        step = np.linalg.lstsq(jac, -r, rcond=None)[0]
        scale = 1.0
        while scale > 1e-4:
            omega = scale * step[: 3 * n].reshape(n, 3)
            trial_m = matrices @ Rotation.from_rotvec(omega).as_matrix()
            trial_l = logits + scale * step[3 * n :]
            trial_w = _softmax(trial_l)
            trial_r = probes(trial_m, trial_w, jacobian=False)
            if np.linalg.norm(trial_r) < norm:
                break
            scale /= 2.0
        else:
            break
        matrices, logits = trial_m, trial_l
        w = _softmax(logits)
        r, jac = probes(matrices, w)
        norm = np.linalg.norm(r)
    return matrices, w, norm


def max_moment(matrices, w, degree: int) -> float:
    """The package's own exactness probe (16 random probe pairs, independent seed)."""
    from ase_symcalc.quadrature import O3Quadrature, rule_moment

    rule = O3Quadrature(matrices, w / w.sum(), name="candidate")
    return rule_moment(rule, degree, n_probes=16, seed=12345)


def optimize(t: int, n: int, seed: int, *, restarts: int = 3):
    """One design of degree t with n points, or None if none converged."""
    for attempt in range(restarts):
        rng = np.random.default_rng([seed, t, n, attempt])
        q0 = rng.normal(size=(n, 4))
        params = np.concatenate([q0.ravel(), np.zeros(n)])
        result = minimize(
            frame_potential,
            params,
            args=(n, t),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 20000, "maxcor": 30, "ftol": 1e-30, "gtol": 1e-14},
        )
        q, logits = _unpack(result.x, n)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        if result.fun > 1e-6:  # stuck far from a design: another start
            continue
        matrices = Rotation.from_quat(q).as_matrix()
        probes = ProbeResiduals(t, rng)
        matrices, w, norm = polish(matrices, _softmax(logits), probes)
        if norm < 1e-13 and max(max_moment(matrices, w, l) for l in range(1, t + 1)) < 1e-13:
            return matrices, w, attempt
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degrees", type=int, nargs="+", default=[6, 7, 8, 9, 10])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    designs = {}
    if args.output.is_file():
        designs = json.loads(args.output.read_text()).get("designs", {})
    for t in args.degrees:
        n = math.ceil((constraint_count(t) + 7) / 4)
        start = time.perf_counter()
        while True:
            found = optimize(t, n, args.seed)
            if found is not None:
                break
            print(f"degree {t}: {n} points did not converge, trying {n + 2}", flush=True)
            n += 2
        matrices, w, attempt = found
        quaternions = Rotation.from_matrix(matrices).as_quat()
        exact = max(max_moment(matrices, w, l) for l in range(1, t + 1))
        above = max_moment(matrices, w, t + 1)
        designs[str(t)] = {
            "degree": t,
            "points": n,
            "quaternions_xyzw": quaternions.tolist(),
            "weights": (w / w.sum()).tolist(),
            "seed": args.seed,
            "attempt": attempt,
            "max_moment_to_degree": exact,
            "max_moment_next_degree": above,
            "weight_ratio_max_min": float(w.max() / w.min()),
            "constraints": constraint_count(t),
            "lower_bound": lower_bound(t),
        }
        print(
            f"degree {t}: {n} points (lower bound {lower_bound(t)}, constraints "
            f"{constraint_count(t)}), max moment to t {exact:.1e}, at t+1 {above:.1e}, "
            f"weights max/min {w.max() / w.min():.1f}, {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "about": "weighted rotation designs on SO(3) from scripts/optimize_designs.py",
            "designs": dict(sorted(designs.items(), key=lambda item: int(item[0]))),
        }
        args.output.write_text(json.dumps(payload) + "\n")


if __name__ == "__main__":
    main()
