"""Naming what a learning rate does, by stated rules: on a quadratic from the closed form and, separately, from a
trajectory; on a network from its loss curve.

Gradient descent on a quadratic of curvature L, f(w) = L/2 (w - w*)^2, multiplies the error by q = 1 - eta L
every step (LeCun, Bottou, Orr & Mueller 1998, Efficient BackProp, sec. 5; Goodfellow, Bengio & Courville 2016,
sec. 4.3). So eta L < 1
converges monotonically (eta L = 1 lands on w* in one step), 1 < eta L < 2 converges while the error flips
sign every step (`oscillates`), eta L = 2 (q = -1) is a period-2 orbit, w* + e, w* - e, w* + e, ..., that
neither converges nor diverges (`period-2`), and eta L > 2 diverges. Whatever converges is still `stalls`
when the horizon T is too short: |q|^T leaves more than the tolerated fraction of the initial error.

`quadratic_theory` gives that label from eta L and T alone; `classify_trajectory` gives one from a simulated
trajectory alone, without the learning rate; the `lr-sensitivity` claim L1 is that the two agree.

A network's loss curve is stochastic: its ups come from the mini-batch noise of SGD, not from the sign flips of
1 < eta L < 2, so a curve whose loss often goes up is `fluctuates`, never `oscillates`.
"""

from __future__ import annotations

import math

import numpy as np

QUADRATIC_LABELS = ("converges", "oscillates", "period-2", "diverges", "stalls")
LOSS_LABELS = ("converges", "fluctuates", "diverges", "stalls")
LABELS = tuple(dict.fromkeys(QUADRATIC_LABELS + LOSS_LABELS))  # every label, for a legend's colours
LOSS_STALL = 0.5  # a loss curve "stalls" when its final loss is above half the initial one
LOSS_RISES = 0.2  # ... and "fluctuates" when more than 20 % of its steps go up
ORBIT_RTOL = 1e-9  # a trajectory "keeps" |e_0| when every |e_t| is within this relative distance (float64 rounding)


def quadratic_theory(lr: float, curvature: float, steps: int, tol: float) -> str:
    """The closed-form label of gradient descent with learning rate `lr` on a quadratic of curvature L over
    `steps` steps: eta L > 2 diverges, eta L = 2 is `period-2`, and below that the contraction |1 - eta L|
    decides: `stalls` when |1 - eta L|^steps > tol (written steps log|q| > log tol, as the explorer does),
    else `oscillates` for 1 < eta L < 2 (q < 0) and `converges` for eta L <= 1."""
    x = lr * curvature
    if x > 2:
        return "diverges"
    if x == 2:
        return "period-2"
    rho = abs(1 - x)
    if rho > 0 and steps * math.log(rho) > math.log(tol):
        return "stalls"
    return "oscillates" if x > 1 else "converges"


def classify_trajectory(errors: np.ndarray, tol: float) -> str:
    """From the errors e_t = w_t - w* (t = 0..T) alone: `period-2` if every |e_t| equals |e_0| (to ORBIT_RTOL)
    while the sign flips every step; `diverges` if |e| ends above |e_0| or is not finite; `stalls` if
    |e_T| > tol |e_0|; `oscillates` if e changes sign; else `converges`."""
    e = np.asarray(errors, dtype=float)
    if not np.all(np.isfinite(e)):
        return "diverges"
    size = np.abs(e)
    flips = np.all(np.sign(e[1:]) == -np.sign(e[:-1])) and e[0] != 0
    if len(e) > 1 and flips and np.all(np.abs(size - size[0]) <= ORBIT_RTOL * size[0]):
        return "period-2"
    if size[-1] > size[0]:
        return "diverges"
    if size[-1] > tol * size[0]:
        return "stalls"
    signs = np.sign(e[size > 0])
    return "oscillates" if np.any(signs[1:] != signs[:-1]) else "converges"


def classify_loss(losses: np.ndarray) -> str:
    """From a training loss curve (evaluations in order): diverges if a value is not finite or the loss ends
    above its start; stalls if it ends above LOSS_STALL of its start; fluctuates if more than LOSS_RISES of
    the steps between evaluations go up (mini-batch noise: the loss of a network is not a quadratic's error,
    and its ups are not the sign flips of `oscillates`); else converges."""
    loss = np.asarray(losses, dtype=float)
    if loss.size < 2 or not np.all(np.isfinite(loss)) or loss[-1] > loss[0]:
        return "diverges"
    if loss[-1] > LOSS_STALL * loss[0]:
        return "stalls"
    return "fluctuates" if np.mean(np.diff(loss) > 0) > LOSS_RISES else "converges"
