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
        squared_norm = torch.linalg.vector_norm(coef, dim=(2, 3)).square()  # a reduction: no coef-sized temporary
        loss = (log_norm[..., 0] - (z * onehot).sum(3)).mean(1) + 0.5 * self.l2[..., 0, 0] * squared_norm
        residual = (torch.exp(z - log_norm) - onehot) / self.n
        grad = torch.bmm(self.x.transpose(1, 2), residual.view(groups, self.n, h * k))
        grad = grad.view(groups, width, h, k).permute(0, 2, 1, 3).contiguous()
        grad[:, :, :-1].addcmul_(self.l2, coef)
        return loss, grad


def _dot(u, v):
    """Row-wise dot products of two (batch, size) tensors, as one batched matrix product (no temporary)."""
    return torch.bmm(u[:, None, :], v[:, :, None]).view(-1)


def _max_norm(g):
    return torch.linalg.vector_norm(g, ord=float("inf"), dim=1)


class _History:
    """The last HISTORY correction pairs of every problem and the inverse-Hessian product they define.

    The product is L-BFGS's compact form (Byrd, Nocedal and Schnabel 1994, as scipy's L-BFGS-B
    keeps it), not the two-loop recursion: with the pairs stored as rows of one (batch, 2 m,
    size) tensor, every dot product the step needs is one batched matrix product and the step
    another, where the two-loop recursion makes 4 m passes of elementwise products over the
    pairs and about 60 more kernel launches per iteration. Few-shot problems have far more
    weights (769 x 100 per C) than images, so that vector algebra, not the objective, is the
    cost: in a 1-shot batch (5 draws x 13 C, 768 features, 100 classes) on one CPU core the
    two-loop's elementwise products were half the time, and the compact form halves the
    time per iteration (benchmarks/lbfgs_step.py). The two are the same matrix in exact
    arithmetic (tests/test_probe.py checks them against each other). A pair that failed
    the curvature test, or that a steepest-descent restart dropped, is masked out of the
    small matrices (`valid`), which the two-loop did by rho = 0.
    """

    def __init__(self, batch, size, dtype, device):
        m = HISTORY
        self.pairs = torch.zeros(batch, 2 * m, size, dtype=dtype, device=device)  # rows: s_0..s_m-1, y_0..y_m-1
        self.s_dot_y = torch.zeros(batch, m, m, dtype=dtype, device=device)  # [i, j] = s_i . y_j
        self.y_dot_y = torch.zeros(batch, m, m, dtype=dtype, device=device)
        self.valid = torch.zeros(batch, m, dtype=torch.bool, device=device)
        self.gamma = torch.ones(batch, dtype=dtype, device=device)  # the initial Hessian is I / gamma
        self.newest = m - 1  # ring buffer slot of the newest pair
        self.pairs_dot_g = torch.zeros(batch, 2 * m, dtype=dtype, device=device)  # [s_i . g, y_i . g]
        # the slots oldest first, for each newest slot: made once (a torch.tensor per step is a copy to the device)
        self.orders = torch.tensor([[(newest + 1 + i) % m for i in range(m)] for newest in range(m)], device=device)

    def direction(self, g):
        """-H g for every problem, H the L-BFGS inverse-Hessian approximation of its valid pairs."""
        m = HISTORY
        order = self.orders[self.newest]
        valid = self.valid[:, order]
        both = valid[:, :, None] & valid[:, None, :]
        s_dot_y = self.s_dot_y[:, order][:, :, order].where(both, 0.0)
        # R: the upper triangle of S'Y; an unused pair gets a 1 on the diagonal so R stays invertible, and its
        # coefficients come out 0 (its row, column and dot products with g are 0)
        r = torch.triu(s_dot_y) + torch.diag_embed((~valid).to(g.dtype))
        d = torch.diagonal(s_dot_y, dim1=1, dim2=2)
        s_g = self.pairs_dot_g[:, :m][:, order].where(valid, 0.0)
        y_g = self.pairs_dot_g[:, m:][:, order].where(valid, 0.0)
        y_dot_y = self.y_dot_y[:, order][:, :, order].where(both, 0.0)
        gamma = self.gamma[:, None]
        w = torch.linalg.solve_triangular(r, s_g[:, :, None], upper=True)[:, :, 0]
        rhs = d * w + gamma * (y_dot_y @ w[:, :, None])[:, :, 0] - gamma * y_g
        on_s = torch.linalg.solve_triangular(r.transpose(1, 2), rhs[:, :, None], upper=False)[:, :, 0]
        coefficients = torch.empty_like(self.pairs_dot_g)
        coefficients[:, order] = on_s
        coefficients[:, m + order] = -gamma * w
        hg = torch.bmm(coefficients[:, None, :], self.pairs).view_as(g).addcmul_(gamma, g)
        return hg.neg_()

    def restart(self, rows):
        """Forget every pair of the problems in `rows` (bool): their next step is steepest descent."""
        self.valid &= ~rows[:, None]

    def add(self, s, y, moved, g):
        """Store the pair (s, y) of each problem that `moved` and passes scipy's curvature test (else an
        unused slot), then the dot products with the new gradient g that the next direction needs; returns
        which problems stored theirs."""
        m = HISTORY
        sy, yy = _dot(s, y), _dot(y, y)
        keep = moved & (sy > torch.finfo(s.dtype).eps * yy)  # scipy skips pairs that fail this
        self.newest = slot = (self.newest + 1) % m
        self.pairs[:, slot] = s.where(keep[:, None], 0.0)
        self.pairs[:, m + slot] = y.where(keep[:, None], 0.0)
        self.valid[:, slot] = keep
        self.gamma = torch.where(keep, sy / yy.where(keep, 1.0), self.gamma)
        # (batch, 3, size) transposed: a contiguous copy, where stacking on dim 2 interleaves (slow on a CPU)
        dots = torch.bmm(self.pairs, torch.stack([g, self.pairs[:, slot], self.pairs[:, m + slot]], 1).transpose(1, 2))
        self.pairs_dot_g = dots[:, :, 0]
        self.s_dot_y[:, slot, :] = dots[:, m:, 1]  # s_new . y_j
        self.s_dot_y[:, :, slot] = dots[:, :m, 2]  # s_j . y_new
        self.y_dot_y[:, slot, :] = dots[:, m:, 2]
        self.y_dot_y[:, :, slot] = dots[:, m:, 2]
        return keep


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
    history = _History(batch, size, x.dtype, x.device)
    has_history = torch.zeros(batch, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(batch, dtype=torch.long, device=x.device)
    stopped = torch.full((batch,), RUNNING, dtype=torch.long, device=x.device)
    stopped[_max_norm(g) <= tol] = GRADIENT  # scipy stops before the first step too
    for _ in range(max_iter):
        active = stopped == RUNNING
        if not bool(active.any()):  # the one host synchronisation per iteration
            break
        direction = history.direction(g)
        slope = _dot(g, direction)
        uphill = slope >= 0  # a stale curvature pair: restart from steepest descent
        direction = torch.where(uphill[:, None], -g, direction)
        history.restart(uphill)
        has_history &= ~uphill
        slope = _dot(g, direction)
        # the first step has unit length, as scipy's; later ones try the full quasi-Newton step
        step = torch.where(has_history, 1.0, 1.0 / direction.norm(dim=1).clamp_min(1e-300))
        accepted = ~active
        new_theta, new_f, new_g = theta, f, g  # torch.where below makes new tensors: nothing is written in place
        for _ in range(MAX_LINE_SEARCH):
            trial = torch.addcmul(theta, step[:, None], direction)
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
        has_history |= history.add(new_theta - theta, new_g - g, moved, new_g)
        decrease = (f - new_f) / torch.maximum(torch.maximum(f.abs(), new_f.abs()), torch.ones_like(f))
        theta, f, g = new_theta, new_f, new_g
        n_iter += moved.long()
        stopped = torch.where(failed, LINE_SEARCH, stopped)
        running = stopped == RUNNING
        stopped = torch.where(running & moved & (decrease <= FTOL), NO_DECREASE, stopped)
        stopped = torch.where(running & moved & (_max_norm(g) <= tol), GRADIENT, stopped)
        stopped = torch.where((stopped == RUNNING) & (n_iter >= max_iter), MAX_ITER, stopped)
    stopped = torch.where(stopped == RUNNING, MAX_ITER, stopped)
    weights = theta.view(groups, h, d + 1, k)
    return BatchFit(  # the weights stay on the device; the small per-fit facts come to the host in one go
        coef=weights[:, :, :-1].transpose(2, 3),
        intercept=weights[:, :, -1],
        n_iter=n_iter.view(groups, h).cpu(),
        stopped=stopped.view(groups, h).cpu(),
        gradient_norm=_max_norm(g).view(groups, h).cpu(),
    )
