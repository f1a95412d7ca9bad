"""Regression test for the shipped default weights: they must keep harmonizing, real composites first."""

import torch

from gknet import Harmonizer
from gknet.config import load_config
from gknet.data.iharmony4 import IHarmony4
from gknet.data.samples import SampleDataset
from gknet.data.synthetic import SyntheticComposites
from gknet.evaluation.metrics import image_metrics
from gknet.evaluation.protocol import evaluate
from gknet.inference.release import load_release, weights_path
from tests.conftest import REPO, require_shared

# Four real composites of ../shared/data/real_val (one per subset), never trained on, with
# the fMSE the shipped weights reach on them at 256 px (MODEL_CARD.md) beside the composite's.
REAL_CASES = {
    ("HAdobe5k", "a0094_1_2.jpg"),  # re-graded photo: a dog in a darker garden
    ("HFlickr", "f2021_1_2.jpg"),  # colour transferred from another photo
    ("Hday2night", "d90000014-10_1_9.jpg"),  # the object from another time of day
    ("RainNet_examples", "rn1_1_1.jpg"),
}


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


def test_shipped_weights_improve_real_composites():
    root = require_shared("data", "real_val")
    everything = IHarmony4(root)
    cases = SampleDataset([s for s in everything if (s.subset, s.name) in REAL_CASES])
    assert len(cases) == len(REAL_CASES)
    run = evaluate(Harmonizer.from_pretrained().harmonize_tensor, cases, "shipped", progress=False)
    # Each must fall well below the composite's fMSE, and on average far below (measured
    # 0.05 / 0.57 / 0.25 / 0.06, mean 0.23; release 1 reached 0.34 / 0.60 / 0.40 / 0.68, mean 0.51).
    ratios = {r["name"]: r["fmse"] / r["composite_fmse"] for r in run.rows}
    assert len(ratios) == len(REAL_CASES), ratios
    assert max(ratios.values()) < 0.65 and sum(ratios.values()) / len(ratios) < 0.35, ratios


def test_shipped_weights_improve_synthetic_validation_composites():
    photos = require_shared("data", "photos")
    # The first 8 of the held-out synthetic validation split (fixed composites, never trained on):
    # synthetic data says whether the model learned at all.
    data = SyntheticComposites(photos, split="val", image_size=256, limit=8)
    batch = [data[i] for i in range(len(data))]
    composite, mask, target = (torch.stack([it[k] for it in batch]) for k in ("composite", "mask", "target"))
    harmonized = Harmonizer.from_pretrained().harmonize_tensor(composite, mask)
    before = image_metrics(composite * 255, target * 255, mask)["fmse"]
    after = image_metrics(harmonized * 255, target * 255, mask)["fmse"]
    numbers = (before.tolist(), after.tolist())
    assert after.mean() < 0.7 * before.mean(), numbers
    strong = before > 1000
    assert int(strong.sum()) >= 2 and bool((after[strong] < before[strong]).all()), numbers


def test_folding_the_identity_kernel_changes_the_shipped_outputs_by_less_than_1e5(monkeypatch):
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
        folded = model(composite, mask.float())  # the fused head and modulation
        model.fused_heads = False  # the kernels predicted whole by KPBlock.forward
        monkeypatch.setattr(KPBlock, "forward", identity_added_after_the_head)
        reference = model(composite, mask.float())
    assert (folded - reference).abs().max() < 1e-5
