"""A fitted infinite-width model as plain data: fit, predict, save to and load from a directory.

>>> import os, tempfile
>>> import numpy as np
>>> from torchntk.model_io import KernelModel, ModelSettings
>>> x, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(40.0).reshape(20, 2)
>>> model = KernelModel.fit(x, y, ModelSettings.mlp(depth=3, kernel="ntk", time=float("inf")))
>>> mean, std = model.predict(x[:5])          # (M, k) each, in the targets' units
>>> mean.shape, std.shape
((5, 2), (5, 2))
>>> path = model.save(os.path.join(tempfile.mkdtemp(), "model"))
>>> np.allclose(KernelModel.load(path).predict(x[:5])[0], mean)
True

The prediction is that of `torchntk.GradientFlow` (docs/conventions.md, the paper's Section A.2): the mean
and standard deviation, over random initialisations, of the output of an infinitely wide network
trained by gradient flow for time ``time`` on C = (1/2N) sum_i |f(x_i) - y_i|^2 (time = inf: to
convergence). ``kernel="ntk"`` trains every layer; ``kernel="nngp"`` trains only the readout,
whose tangent kernel is Sigma(L), so that at time = inf the prediction is the exact Gaussian-
process posterior. The standard deviation is that of the network's output over initialisations
(no observation noise is added).

On disk a model is a directory with ``model.json`` (a format tag and version, the settings, the
column names, the number of training rows and a sha256 content fingerprint of all of it and of
the arrays) and ``arrays.npz`` (training inputs and targets, the standardisation, the training
kernel's eigendecomposition and its NNGP matrix); `load` reads it without pickle, validates every
field and verifies the fingerprint, and refuses anything that is not such a directory. Sizes:
two (N, N) float64 matrices, 16 N^2 bytes.

model.json holds the network as its description's ``spec.to_dict()`` data, whatever the network
(`ModelSettings.mlp` for the fully-connected one, ``ModelSettings.with_spec(spec, input_shape)``
for any other), and the per-example shape that each stored (flattened) input row is reshaped to;
both are covered by the fingerprint, and the description is rebuilt by `torchntk.from_dict`,
which refuses unknown layers and deep nesting. Version-4 files (no side inputs) and version-3
files (no classifiers) are read as they are, version-2 files (fully-connected networks as depth
/ activation / scale fields) are read and migrated in memory; older ones are refused.

A classifier is ``KernelModel.fit(x, labels, settings, task="classification")`` with labels of
shape (N,), integers or strings: the network is trained on the labels' one-hot codes (centred at
1/K for K classes), `KernelModel.predict` returns the K scores and `KernelModel.predict_labels`
the label with the largest score, of the labels' own type. model.json stores the sorted labels
under "classes" (null for a regression), under the fingerprint.

Side inputs (`torchntk._side`): a network with `torchntk.Aggregate` reads each graph's
adjacency, and padded inputs may carry a mask; ``KernelModel.fit(x, y, settings,
side_inputs={"adjacency": A})`` takes the training ones, saved in arrays.npz as
``adjacency_train`` (``mask_train``) and listed in model.json under "side_inputs", both under
the fingerprint; ``predict(x, side_inputs=...)`` takes those of the new inputs.

>>> labels = np.where(x[:, 0] > 0, "up", "down")
>>> clf = KernelModel.fit(x, labels, ModelSettings.mlp(depth=3), task="classification")
>>> clf.classes.tolist(), clf.predict_labels(x[:3]).tolist() == labels[:3].tolist()
(['down', 'up'], True)
"""

from __future__ import annotations

from .files import FORMAT, VERSION, check_save_target, content_fingerprint
from .model import KernelFn, KernelModel, column_moments, direct_kernels
from .settings import ModelSettings

__all__ = ["FORMAT", "VERSION", "KernelFn", "KernelModel", "ModelSettings", "check_save_target", "column_moments",
           "content_fingerprint", "direct_kernels"]
