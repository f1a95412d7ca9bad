"""Regression test for the shipped default weights: they must keep harmonizing."""

import torch

from gknet import Harmonizer
from gknet.config import load_config
from gknet.data.perturbations import FAMILY_WEIGHTS, GRADE_FAMILIES
from gknet.data.synthetic import SyntheticComposites
from gknet.metrics import image_metrics
from gknet.release import load_release, weights_path
from tests.conftest import REPO, require_shared


def test_shipped_weights_exist_and_load_strictly():
    path = weights_path("gknet_small")  # raises if the file is missing
    assert path.stat().st_size + path.with_suffix(".json").stat().st_size < 20e6
    _, model_cfg, _ = load_release(path)  # strict: raises on any missing or unexpected tensor
    # the config that reproduces them (MODEL_CARD.md) describes exactly this architecture
    recipe = load_config(REPO / "configs" / "gknet_small.yaml")
    assert recipe.model == model_cfg
    # ... and the release describes how it runs: 256 px network pass, trained at the recipe's size
    settings = Harmonizer.from_pretrained().settings
    assert settings.resolution == 256 and settings.train_size == recipe.train.image_size


def test_shipped_weights_improve_fixed_validation_composites(one_thread):
    photos = require_shared("data", "photos")
    # The first 6 of the held-out validation split: fixed composites, never seen in training, with
    # object-only edits of the families these weights were trained on (the generator has more now).
    trained_on = {f: FAMILY_WEIGHTS[f] for f in (*GRADE_FAMILIES, "lab_transfer")}
    data = SyntheticComposites(
        photos, split="val", image_size=256, limit=6, mode_probs={"object": 1.0}, family_weights=trained_on
    )
    batch = [data[i] for i in range(len(data))]
    composite = torch.stack([item["composite"] for item in batch])
    mask = torch.stack([item["mask"] for item in batch])
    target = torch.stack([item["target"] for item in batch])

    harmonized = Harmonizer.from_pretrained().harmonize_tensor(composite, mask)

    before = image_metrics(composite * 255, target * 255, mask)["fmse"]
    after = image_metrics(harmonized * 255, target * 255, mask)["fmse"]
    # The model measured 0.41x the composite's fMSE over the 201 validation images of the generator
    # it was trained with (MODEL_CARD.md); today's edits are stronger (calibrated to iHarmony4, issue
    # 17), and on these six it reaches 0.70x. The mean must fall by at least a fifth and every strongly
    # perturbed image (fMSE > 1000) must improve. Nearly harmonious ones (fMSE 10-400) may get a
    # little worse: a known weakness written in the model card.
    numbers = (before.tolist(), after.tolist())
    assert after.mean() < 0.8 * before.mean(), numbers
    strong = before > 1000
    assert int(strong.sum()) >= 2 and bool((after[strong] < before[strong]).all()), numbers


def test_folding_the_identity_kernel_changes_the_shipped_outputs_by_less_than_1e5(one_thread, monkeypatch):
    """KPBlock adds the identity kernel through the head's bias; adding it after the head (as
    the weights were trained) must give the same harmonization up to float rounding."""
    from gknet.models.kpb import KPBlock

    def identity_added_after_the_head(self, f_e, f_prev):
        fused, weights = self.fusion(f_e, f_prev)
        f_kpb = self.body(fused)
        b, _, h, w = f_kpb.shape
        kernels = self.head(f_kpb).view(b, self.out_channels, self.taps, h, w)
        kernels = kernels + self.identity.view(1, self.out_channels, self.taps, 1, 1)
        return kernels, f_kpb, weights

    model = Harmonizer.from_pretrained().model
    g = torch.Generator().manual_seed(0)
    composite, mask = torch.rand(2, 3, 256, 256, generator=g), (torch.rand(2, 1, 256, 256, generator=g) > 0.5)
    with torch.no_grad():
        folded = model(composite, mask.float())
        monkeypatch.setattr(KPBlock, "forward", identity_added_after_the_head)
        reference = model(composite, mask.float())
    assert (folded - reference).abs().max() < 1e-5
