"""How inconsistent is the shipped PSLD model's ε? (issue 19: should the trainer learn a consistent ε?)

    PYTHONPATH=src python benchmarks/consistency_check.py [--n 64] [--data-dir .data/fmnist]

On the training marginals (Fashion-MNIST test images x₀, z_t = ψ_t x₀ + L_t ε with fresh ε) the network's ε_θ is
split into its consistent part ε̃ = P_z z + P_ε ε_θ (the consistency projection) and the rest ε_θ − ε̃. Reported
per t: the RMS of the inconsistent part, relative to the RMS of ε_θ, and the RMS of ε_θ − ε and ε̃ − ε (the
training error before and after the projection). If the projection removes a good part of the training error,
learning a consistent ε (x̂₀-prediction, or the projection inside the loss) would help the ε-form samplers; if the
inconsistent part is small beside the rest of the error, it would not change much.
"""

from __future__ import annotations

import argparse

import torch

import cosi
from cosi.core.integrators.coefficients import consistency_projection
from cosi.core.processes import f64
from cosi.data import load_fashion_mnist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    m = cosi.load_model("fmnist-psld")
    p = m.process
    x0 = load_fashion_mnist(args.data_dir, "test").images[: args.n]
    x0 = (x0.float() / 127.5 - 1) if x0.dtype == torch.uint8 else x0.float()
    g = torch.Generator().manual_seed(0)
    print("| t | inconsistent part / ε_θ (RMS) | training error ε_θ − ε (RMS) | after the projection ε̃ − ε (RMS) |")
    print("|---|---|---|---|")
    for t in (0.002, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0):
        tt = torch.tensor([t], dtype=f64)
        mar = p.marginal(tt)
        xf = x0.flatten(1)  # (n, D)
        eps = torch.randn((args.n, p.k, xf.shape[1]), generator=g)
        L, psi = mar.L[0].float(), mar.psi[0].float()
        z = psi.view(1, p.k, 1) * xf[:, None] + torch.einsum("ij,bjd->bid", L, eps)  # (n, k, D)
        with torch.no_grad():
            e_th = m.eps_model(z.reshape(args.n, p.k * x0.shape[1], *x0.shape[2:]),
                               torch.full((args.n,), t)).reshape(args.n, p.k, -1)
        Pz, Pe = (c[0].float() for c in consistency_projection(p, tt))
        e_t = torch.einsum("ij,bjd->bid", Pz, z) + torch.einsum("ij,bjd->bid", Pe, e_th)
        ef = eps
        rms = lambda a: float(a.pow(2).mean().sqrt())  # noqa: E731
        print(f"| {t:g} | {rms(e_th - e_t) / rms(e_th):.3g} | {rms(e_th - ef):.3g} | {rms(e_t - ef):.3g} |", flush=True)


if __name__ == "__main__":
    main()
