"""neural-tangents 0.6.5's kernels as stored in tests/fixtures/neural_tangents/ (layers.npz made by
make_layers.py there, masks.npz by make_masks.py), and the one comparison every twin test makes
with them.

Tolerance: both sides are float64 closed forms of the same finite sums, so they agree to
round-off, 1e-12 of the largest entry. One exception: neural-tangents' ReLU takes the angle
arctan2(sqrt(q q' - c^2), c), and on the diagonal of a kernel of x against itself q q' - c^2 is
round-off, ~1e-16 q^2, whose square root moves the angle by up to ~1e-8; there the comparison is at
1e-8 (torchntk takes c = sqrt(q q') exactly; Monte Carlo over finite networks checks the kernels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "neural_tangents"


def load(name: str = "layers") -> dict[str, np.ndarray]:
    """Every array of the fixture ``name``.npz, by name."""
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def channels_first(x: np.ndarray) -> torch.Tensor:
    """neural-tangents' channels-last (N, *positions, C) as PyTorch's (N, C, *positions)."""
    return torch.from_numpy(np.moveaxis(x, -1, 1).copy())


def assert_matches(reference: dict[str, np.ndarray], name: str, tag: str, nngp: torch.Tensor,
                   ntk: torch.Tensor, *, tolerance: float = 1e-12) -> None:
    """torchntk's (nngp, ntk) equal the fixture's ``{name}{tag}_nngp`` / ``_ntk`` (tag "" for x1
    against x2, "_self" for x1 against itself) within the module's tolerance (``tolerance`` of
    the largest entry off the self-diagonal: a caller that passes another says why)."""
    for kind, ours in (("nngp", nngp), ("ntk", ntk)):
        theirs = torch.from_numpy(reference[f"{name}{tag}_{kind}"])
        assert ours.shape == theirs.shape, (name, tag, kind, tuple(ours.shape), tuple(theirs.shape))
        scale = theirs.abs().max()
        bound = torch.full_like(theirs, tolerance * scale)
        if tag == "_self":
            bound.diagonal().fill_(max(1e-8, tolerance) * scale)
        assert ((ours - theirs).abs() <= bound).all(), f"{name}{tag} {kind}"
