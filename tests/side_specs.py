"""The two descriptions the side-input tests of every edge (CLI, model files, stores,
scikit-learn, the registry) share: a graph network that reads an adjacency, and a sequence
network that a mask may go with."""

import torchntk as tn


def graph_spec() -> tn.Serial:
    """Graphs (N, C, V): a node-wise layer, one Aggregate (reads ``adjacency``), a pooled readout."""
    return tn.serial(tn.Conv((1,)), tn.Aggregate(), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())


def sequence_spec() -> tn.Serial:
    """Sequences (N, C, L): a stride-1 "same" convolution and a pooled readout, which keep a mask's
    positions (so a mask is optional)."""
    return tn.serial(tn.Conv((3,), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
