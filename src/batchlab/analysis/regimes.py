"""Naming what a learning rate does: `converges`, `oscillates`, `diverges` or `stalls`, by stated rules.

Two detectors for the same four labels. On a parameter trajectory (the quadratic, where the theory
is exact) oscillation is the error changing sign; on a loss curve (a network, where only the loss is
seen) it is the loss going up between evaluations.
"""

from __future__ import annotations

import math

import numpy as np

LABELS = ("converges", "oscillates", "diverges", "stalls")
LOSS_STALL = 0.5  # a loss curve "stalls" when its final loss is above half the initial one
LOSS_RISES = 0.2  # ... and "oscillates" when more than 20 % of its steps go up


def quadratic_theory(lr: float, steps: int, tol: float) -> str:
    """L(w) = (w - w*)^2: gradient descent multiplies the error by q = 1 - 2 lr each step. |q| > 1 diverges;
    q < 0 flips the error's sign every step (oscillates); 0 <= q < 1 converges monotonically; either
    "stalls" when |q|^steps > tol (the budget is too short to reach the tolerance). q = -1 (lr = 1)
    oscillates without converging and is called `oscillates`."""
    q = 1 - 2 * lr
    if abs(q) > 1:
        return "diverges"
    if abs(q) == 1:
        return "oscillates" if q < 0 else "stalls"
    if q != 0 and steps * math.log(abs(q)) > math.log(tol):
        return "stalls"
    return "oscillates" if q < 0 else "converges"


def classify_trajectory(errors: np.ndarray, tol: float) -> str:
    """From the errors e_t = w_t - w* (t = 0..T): diverges if |e| ends above |e_0| or is not finite;
    stalls if |e_T| > tol |e_0|; oscillates if e changes sign; else converges."""
    e = np.asarray(errors, dtype=float)
    if not np.all(np.isfinite(e)) or abs(e[-1]) > abs(e[0]):
        return "diverges"
    if abs(e[-1]) > tol * abs(e[0]):
        return "stalls"
    signs = np.sign(e[np.abs(e) > 0])
    return "oscillates" if np.any(signs[1:] != signs[:-1]) else "converges"


def classify_loss(losses: np.ndarray) -> str:
    """From a training loss curve (evaluations in order): diverges if a value is not finite or the loss ends
    above its start; stalls if it ends above LOSS_STALL of its start; oscillates if more than LOSS_RISES of
    the steps between evaluations go up; else converges."""
    loss = np.asarray(losses, dtype=float)
    if loss.size < 2 or not np.all(np.isfinite(loss)) or loss[-1] > loss[0]:
        return "diverges"
    if loss[-1] > LOSS_STALL * loss[0]:
        return "stalls"
    return "oscillates" if np.mean(np.diff(loss) > 0) > LOSS_RISES else "converges"
