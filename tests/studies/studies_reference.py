"""Independent references for the studies' tests: plain gradient descent and a Jacobian NTK,
written directly with torch.autograd (not through torchntk.training or torchntk.empirical)."""

import torch


def jacobian_ntk(net: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Theta[i, j, k, k'] = sum_p df_k(x1_i)/dtheta_p df_k'(x2_j)/dtheta_p, one backward per output entry."""
    params = [p for p in net.parameters() if p.requires_grad]

    def jac(x):
        out = net(x)
        rows = []
        for i in range(out.shape[0]):
            for k in range(out.shape[1]):
                grads = torch.autograd.grad(out[i, k], params, retain_graph=True)
                rows.append(torch.cat([g.reshape(-1) for g in grads]))
        return torch.stack(rows).reshape(out.shape[0], out.shape[1], -1)

    j1, j2 = jac(x1).double(), jac(x2).double()
    return torch.einsum("ikp,jlp->ijkl", j1, j2)


def gradient_descent(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
                     every: int | None = None, x_probe: torch.Tensor | None = None) -> list:
    """theta <- theta - lr dC/dtheta with C = (1/2N) sum_i |f(x_i) - y_i|^2, in place. Returns the
    empirical NTK on (x_probe or x) at steps 0, every, 2 every, ... (when ``every`` is given)."""
    params = [p for p in net.parameters() if p.requires_grad]
    probe = x if x_probe is None else x_probe
    kernels = []
    for step in range(steps + 1):
        if every is not None and (step % every == 0 or step == steps):
            kernels.append(jacobian_ntk(net, probe, probe))
        if step == steps:
            break
        cost = 0.5 * ((net(x) - y) ** 2).sum() / x.shape[0]
        grads = torch.autograd.grad(cost, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= lr * g
    return kernels
