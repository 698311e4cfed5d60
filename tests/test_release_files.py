"""Files written by the previous release (torchntk 0.1.0; tests/fixtures/make_release_files.py
made them with that release): model files of version 2 are read, migrated in memory to the one
description format, and predict what they predicted then; kernel stores of layout 2 are
refused with a message that names their layout and says what to do, and are left untouched."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.model_io import VERSION, KernelModel
from torchntk.scale import kernel_matrix, open_kernel_matrix

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"

# The stored predictions came from the same closed forms on the same float64 numbers; the new
# engine groups a few operations differently, so agreement is to round-off, not bit for bit.
ROUND_OFF = dict(rtol=1e-10, atol=1e-12)


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name, network", [
    ("dense", tn.mlp(3, "erf", bias_std=0.3)),
    ("conv", tn.serial(tn.Conv((2, 2), padding="same"), tn.ReLU(), tn.Flatten(), tn.Dense())),
])
def test_version_2_models_are_migrated_and_predict_as_before(tmp_path, name, network):
    assert json.loads((RELEASE / f"{name}-model" / "model.json").read_text())["version"] == 2
    before = _tree_digest(RELEASE)
    model = KernelModel.load(RELEASE / f"{name}-model")
    assert model.settings.network == network.to_dict()      # the one description format
    mean, std = model.predict(np.load(RELEASE / f"{name}-inputs.npy", allow_pickle=False))
    expected = np.load(RELEASE / f"{name}-predictions.npy", allow_pickle=False)
    np.testing.assert_allclose(mean, expected[0], **ROUND_OFF)
    np.testing.assert_allclose(std, expected[1], **ROUND_OFF)
    assert _tree_digest(RELEASE) == before                   # reading never rewrites the old files
    again = KernelModel.load(model.save(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / "model.json").read_text())["version"] == VERSION == 5
    assert again.settings == model.settings


def test_an_edited_version_2_model_is_still_refused(tmp_path):
    shutil.copytree(RELEASE / "dense-model", tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["settings"]["depth"] = 4
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="fingerprint"):
        KernelModel.load(tmp_path / "m")
    meta["settings"]["activation"] = "no-such-thing"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version-2 model file.*refit"):
        KernelModel.load(tmp_path / "m")


def test_a_layout_2_store_is_refused_by_name_and_left_untouched(tmp_path):
    store = tmp_path / "store.zarr"
    shutil.copytree(RELEASE / "store.zarr", store)
    before = _tree_digest(store)
    for attempt in (lambda: open_kernel_matrix(store),
                    lambda: kernel_matrix(tn.mlp(3), torch.zeros(12, 3), store=store, tile=8, progress=False)):
        with pytest.raises(ValueError, match="layout 'torchntk-kernel-store/2'.*recompute"):
            attempt()
    assert _tree_digest(store) == before
