"""Many multinomial logistic regressions at once, by L-BFGS in torch: scikit-learn's objective on any device.

The objective is scikit-learn's LogisticRegression(solver="lbfgs") with its default
multinomial loss: the mean cross-entropy over the training images plus
||coef||² / (2 C n), the intercept unpenalised (scikit-learn 1.9's
`_logistic_regression_path`: l2_reg_strength = 1 / (C n) on the mean loss). The
stopping rule is scipy's L-BFGS-B's as scikit-learn sets it: the largest gradient
component at most `tol` (pgtol), a relative decrease of the objective of at most
64 machine epsilons (ftol), or `max_iter` iterations. The problem is convex, so both
solvers reach the same optimum up to that tolerance.

Why not scikit-learn's own array-API path, which also takes torch tensors (1.9:
LogisticRegression under `array_api_dispatch`)? It drives scipy's L-BFGS-B on the
host: one fit at a time, each iteration a round trip between the device and the host
and a few dozen small kernels. A linear-probe stage fits hundreds of small
independent problems (13 C values for each of 5 few-shot draws at 4 shot counts, plus
two full-size sweeps): here every problem is one row of a batch, so each iteration
is one batched matrix product for all of them (benchmarks/probe_cost.py measures
the three paths: `--backend numpy|torch|array-api`).

Problems come in groups that share training images (a few-shot draw; the full
training split) and differ in C: x is (groups, images, features), and every C of
`inverse_c` is fitted for every group. Work is in float64, as scikit-learn's lbfgs.
"""

from dataclasses import dataclass

import torch

HISTORY = 10  # correction pairs kept: scipy's L-BFGS-B default (maxcor)
MAX_LINE_SEARCH = 50  # trial steps per iteration: scikit-learn asks scipy for maxls=50
ARMIJO = 1e-4  # sufficient decrease, as scipy's line search (ftol of dcsrch)
FTOL = 64 * torch.finfo(torch.float64).eps  # relative decrease that ends a fit: scikit-learn's ftol for scipy

# why a fit stopped
RUNNING, GRADIENT, MAX_ITER, NO_DECREASE, LINE_SEARCH = range(5)
STOPPED = {
    GRADIENT: "converged: gradient max-norm at most tol",
    MAX_ITER: "stopped at max_iter",
    NO_DECREASE: "converged: relative decrease of the objective at most 64 eps",
    LINE_SEARCH: "line search found no decrease",
}


@dataclass
class BatchFit:
    """Fitted weights for every (group, C): coef (G, H, classes, features), intercept (G, H, classes)."""

    coef: torch.Tensor
    intercept: torch.Tensor
    n_iter: torch.Tensor  # (G, H) iterations each fit took
    stopped: torch.Tensor  # (G, H) why it stopped: GRADIENT, MAX_ITER, NO_DECREASE or LINE_SEARCH
    gradient_norm: torch.Tensor  # (G, H) the final gradient's max-norm

    def converged(self, g, h):
        return int(self.stopped[g, h]) in (GRADIENT, NO_DECREASE)

    def message(self, g, h, tol):
        """None for a converged fit, else one line saying why not (the probe's path keeps it)."""
        if self.converged(g, h):
            return None
        return (
            f"torch lbfgs {STOPPED[int(self.stopped[g, h])]} after {int(self.n_iter[g, h])} iterations "
            f"with gradient max-norm {float(self.gradient_norm[g, h]):.2e} > tol {tol:g}"
        )


class _Objective:
    """Mean cross-entropy + L2 of every (group, C) problem, and its gradient, in one batched pass."""

    def __init__(self, x, y, n_classes, inverse_c):
        groups, n, _ = x.shape
        self.x = torch.cat([x, torch.ones(groups, n, 1, dtype=x.dtype, device=x.device)], dim=2)  # intercept column
        self.onehot = torch.nn.functional.one_hot(y, n_classes).to(x.dtype)  # (G, n, k)
        self.l2 = (torch.as_tensor(inverse_c, dtype=x.dtype, device=x.device) / n)[None, :, None, None]
        self.n = n

    def __call__(self, theta):
        """theta (G, H, features + 1, k), the last row the intercepts → (loss (G, H), gradient like theta)."""
        groups, h, width, k = theta.shape
        z = torch.bmm(self.x, theta.permute(0, 2, 1, 3).reshape(groups, width, h * k)).view(groups, self.n, h, k)
        log_norm = torch.logsumexp(z, dim=3, keepdim=True)
        onehot = self.onehot[:, :, None, :]
        coef = theta[:, :, :-1]
        penalty = self.l2 * coef
        loss = (log_norm[..., 0] - (z * onehot).sum(3)).mean(1) + 0.5 * (penalty * coef).sum((2, 3))
        residual = (torch.exp(z - log_norm) - onehot) / self.n
        grad = torch.bmm(self.x.transpose(1, 2), residual.view(groups, self.n, h * k))
        grad = grad.view(groups, width, h, k).permute(0, 2, 1, 3).contiguous()
        grad[:, :, :-1] += penalty
        return loss, grad


def _direction(g, s_hist, y_hist, rho, gamma, newest):
    """L-BFGS two-loop recursion for every problem (rows of g); entries with rho 0 are unused."""
    q = g.clone()
    alphas = []
    m = len(rho)
    order = [(newest - i) % m for i in range(m)]
    for i in order:
        alpha = rho[i] * (s_hist[i] * q).sum(1)
        q -= alpha[:, None] * y_hist[i]
        alphas.append(alpha)
    r = gamma[:, None] * q
    for i, alpha in zip(reversed(order), reversed(alphas)):
        beta = rho[i] * (y_hist[i] * r).sum(1)
        r += s_hist[i] * (alpha - beta)[:, None]
    return -r


def fit(x, y, n_classes, inverse_c, tol, max_iter):
    """Fit every C of `inverse_c` (1 / C values) on every group of x; returns a BatchFit.

    x: (G, n, d) float64 standardised features; y: (G, n) int64 class indices in [0, n_classes).
    """
    groups, _, d = x.shape
    h, k = len(inverse_c), n_classes
    objective = _Objective(x, y, k, inverse_c)
    batch, size = groups * h, (d + 1) * k
    theta = torch.zeros(batch, size, dtype=x.dtype, device=x.device)

    def evaluate(flat):
        loss, grad = objective(flat.view(groups, h, d + 1, k))
        return loss.reshape(batch), grad.reshape(batch, size)

    f, g = evaluate(theta)
    s_hist = torch.zeros(HISTORY, batch, size, dtype=x.dtype, device=x.device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(HISTORY, batch, dtype=x.dtype, device=x.device)
    gamma = torch.ones(batch, dtype=x.dtype, device=x.device)
    has_history = torch.zeros(batch, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(batch, dtype=torch.long, device=x.device)
    stopped = torch.full((batch,), RUNNING, dtype=torch.long, device=x.device)
    stopped[g.abs().amax(1) <= tol] = GRADIENT  # scipy stops before the first step too
    newest = HISTORY - 1
    for _ in range(max_iter):
        active = stopped == RUNNING
        if not bool(active.any()):  # the one host synchronisation per iteration
            break
        direction = _direction(g, s_hist, y_hist, rho, gamma, newest)
        slope = (g * direction).sum(1)
        uphill = slope >= 0  # a stale curvature pair: restart from steepest descent
        direction = torch.where(uphill[:, None], -g, direction)
        rho = torch.where(uphill[None, :], 0.0, rho)
        has_history &= ~uphill
        slope = (g * direction).sum(1)
        # the first step has unit length, as scipy's; later ones try the full quasi-Newton step
        step = torch.where(has_history, 1.0, 1.0 / direction.norm(dim=1).clamp_min(1e-300))
        accepted = ~active
        new_theta, new_f, new_g = theta.clone(), f.clone(), g.clone()
        for _ in range(MAX_LINE_SEARCH):
            trial = theta + step[:, None] * direction
            trial_f, trial_g = evaluate(trial)
            ok = ~accepted & (trial_f <= f + ARMIJO * step * slope)
            new_theta = torch.where(ok[:, None], trial, new_theta)
            new_f, new_g = torch.where(ok, trial_f, new_f), torch.where(ok[:, None], trial_g, new_g)
            accepted |= ok
            if bool(accepted.all()):
                break
            # quadratic interpolation of the objective along the direction, kept within [0.1, 0.5] of the step
            curvature = trial_f - f - slope * step
            guess = -slope * step**2 / (2 * curvature.clamp_min(1e-300))
            step = torch.where(accepted, step, torch.minimum(torch.maximum(guess, 0.1 * step), 0.5 * step))
        failed = active & ~accepted
        moved = active & accepted
        s, yv = new_theta - theta, new_g - g
        sy, yy = (s * yv).sum(1), (yv * yv).sum(1)
        curvature_ok = moved & (sy > torch.finfo(x.dtype).eps * yy)  # scipy skips pairs that fail this
        newest = (newest + 1) % HISTORY
        s_hist[newest] = torch.where(curvature_ok[:, None], s, 0.0)
        y_hist[newest] = torch.where(curvature_ok[:, None], yv, 0.0)
        rho[newest] = torch.where(curvature_ok, 1.0 / sy.where(curvature_ok, 1.0), 0.0)
        gamma = torch.where(curvature_ok, sy / yy.where(curvature_ok, 1.0), gamma)
        has_history |= curvature_ok
        decrease = (f - new_f) / torch.maximum(torch.maximum(f.abs(), new_f.abs()), torch.ones_like(f))
        theta, f, g = new_theta, new_f, new_g
        n_iter += moved.long()
        stopped = torch.where(failed, LINE_SEARCH, stopped)
        running = stopped == RUNNING
        stopped = torch.where(running & moved & (decrease <= FTOL), NO_DECREASE, stopped)
        stopped = torch.where(running & moved & (g.abs().amax(1) <= tol), GRADIENT, stopped)
        stopped = torch.where((stopped == RUNNING) & (n_iter >= max_iter), MAX_ITER, stopped)
    stopped = torch.where(stopped == RUNNING, MAX_ITER, stopped)
    weights = theta.view(groups, h, d + 1, k)
    return BatchFit(  # the weights stay on the device; the small per-fit facts come to the host in one go
        coef=weights[:, :, :-1].transpose(2, 3),
        intercept=weights[:, :, -1],
        n_iter=n_iter.view(groups, h).cpu(),
        stopped=stopped.view(groups, h).cpu(),
        gradient_norm=g.abs().amax(1).view(groups, h).cpu(),
    )
