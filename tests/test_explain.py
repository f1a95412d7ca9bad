import math

import numpy as np
import pytest
import torch
from PIL import Image

from gknet import explain as ex
from gknet.cli import main
from gknet.errors import GknetError
from gknet.explain import figures as fig
from gknet.explain.capture import capture, lre_attention, scf_features
from gknet.explain.clustering import kernel_clusters, kmeans
from gknet.inference.harmonizer import Harmonizer
from gknet.models import build_model
from tests.conftest import ship_weights, tiny_config

W, H = 56, 40  # a non-square composite: the pictures must follow its aspect ratio


def make_pair(width=W, height=H):
    """A smooth synthetic scene with a colour-shifted rectangular foreground."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.4 * np.sin(xx / 6) * np.cos(yy / 5)], axis=2)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 5 : width // 2] = 255
    img[mask > 0] = img[mask > 0] * 0.5 + [0.5, 0.1, 0.0]
    return Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)), Image.fromarray(mask)


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    pairs = set(zip(a.flatten().tolist(), b.flatten().tolist(), strict=True))
    return len(pairs) == len(set(a.flatten().tolist())) == len(set(b.flatten().tolist()))


def expected_size(rows, cols, panel, colorbar, width=W, height=H):
    """The documented layout: fixed-size panels (height from the aspect ratio), titles, colour bar."""
    panel_h = round(panel * height / width)
    return (
        fig.PAD + cols * (panel + fig.PAD) + (fig.COLORBAR if colorbar else 0),
        fig.HEADER + rows * (fig.TITLE + panel_h + fig.PAD),
    )


def traced(model, resolution=W):
    """The explanation's one network pass, through a Harmonizer at ``resolution``."""
    comp, mask = make_pair()
    return capture(Harmonizer(model, resolution), comp, mask)


def test_kmeans_recovers_separated_blobs():
    gen = torch.Generator().manual_seed(1)
    means = torch.tensor([[0.0, 0, 0, 0, 0], [10, 0, 0, 0, 0], [0, 10, 0, 5, 0], [0, 0, -10, 0, 8]])
    truth = torch.arange(4).repeat_interleave(torch.tensor([50, 80, 30, 120]))
    points = means[truth] + 0.5 * torch.randn(len(truth), 5, generator=gen)
    perm = torch.randperm(len(truth), generator=gen)
    labels, centers = kmeans(points[perm], 4, seed=3)
    assert same_partition(labels, truth[perm])
    for lab in range(4):  # each centre is its blob's sample mean
        members = points[perm][labels == lab]
        torch.testing.assert_close(centers[lab], members.mean(0), atol=1e-4, rtol=0)
    assert torch.equal(kmeans(points[perm], 4, seed=3)[0], labels)  # deterministic per seed


def test_kmeans_degenerate_inputs():
    labels, centers = kmeans(torch.ones(10, 3), 3)  # all points identical: no NaN, no crash
    assert labels.shape == (10,) and torch.isfinite(centers).all()
    with pytest.raises(ValueError):
        kmeans(torch.zeros(2, 3), 3)


@pytest.fixture
def weights(tiny_release):
    return tiny_release


def test_cli_writes_every_picture(tmp_path, weights):
    comp, mask = make_pair()
    comp.save(tmp_path / "c.png")
    mask.save(tmp_path / "m.png")
    out = tmp_path / "out"
    args = ["explain", str(tmp_path / "c.png"), str(tmp_path / "m.png"), "-o", str(out)]
    args += ["--weights", str(weights), "--resolution", str(W), "--clusters", "3"]
    assert main(args) == 0

    cfg = tiny_config()
    layout = {  # name -> rows, cols, panel width, colour bar
        "composite_harmonized": (1, 2, fig.PANEL, False),
        "change_map": (1, 1, fig.PANEL, True),
        "kernel_clusters": (1, cfg.kpb_levels + 1, fig.PANEL, False),
        "scf_features": (2, 4, fig.SMALL_PANEL, False),  # the finest level has widths[0] = 8 channels
        "lre_attention": (cfg.lre_layers, cfg.lre_heads, fig.PANEL, True),
    }
    page = (out / "index.html").read_text()
    for name, spec in layout.items():
        img = np.asarray(Image.open(out / f"{name}.png").convert("RGB"), dtype=np.float64)
        assert (img.shape[1], img.shape[0]) == expected_size(*spec), name
        assert img.var() > 0, name
        assert f'src="{name}.png"' in page
    assert "tiny.safetensors" in page

    # The left panel of the side-by-side really is the composite (outline aside).
    panel_h = round(fig.PANEL * H / W)
    top = fig.HEADER + fig.TITLE
    shown = np.asarray(Image.open(out / "composite_harmonized.png").convert("RGB"), dtype=np.float64)
    shown = shown[top : top + panel_h, fig.PAD : fig.PAD + fig.PANEL]
    ref = np.asarray(comp.resize((fig.PANEL, panel_h), Image.BILINEAR), dtype=np.float64)
    assert np.median(np.abs(shown - ref)) < 6

    # A second run refuses to replace the pictures, with one clear line, unless --overwrite.
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0


def test_kernel_clusters_come_from_the_kernels():
    model = build_model(tiny_config())
    cap = traced(model)
    labels = kernel_clusters(cap, k=4)
    assert [lab.shape for lab in labels] == [(W // 2, W // 2), (W, W)]  # W x W network pass, deepest first
    # Same partition as K-means on the raw kernel tensor of each level.
    for lab, level in zip(labels, cap.inter.kernels, strict=True):
        gh, gw = lab.shape
        direct, _ = kmeans(level.kernels[0, :, :, :gh, :gw].reshape(-1, gh * gw).T, 4)
        assert same_partition(lab.flatten(), direct)

    with torch.no_grad():  # the output head does not touch the kernels: labels stay
        model.head.weight.add_(1.0)
    again = kernel_clusters(traced(model), k=4)
    assert all(torch.equal(a, b) for a, b in zip(labels, again, strict=True))
    with torch.no_grad():  # the kernel heads do: labels change
        for block in model.kpb:
            block.head.weight.copy_(torch.randn_like(block.head.weight))
    changed = kernel_clusters(traced(model), k=4)
    assert not any(same_partition(a, b) for a, b in zip(labels, changed, strict=True))


def test_lre_attention_is_the_query_tokens_row():
    model = build_model(tiny_config())
    cap = traced(model)  # the network sees a W x W copy
    maps = lre_attention(cap, (31, 9))
    gh, gw = cap.inter.lre_grid
    assert (gh, gw) == (W // 2, W // 2) and maps.shape == (2, 2, gh, gw)
    # Pixel (31, 9) of the 56x40 input is at (31.5, 9.5 * 56 / 40 = 13.3) in the network input:
    # token column 15, row 6 of the stride-2 grid (row-major).
    row = 6 * gw + 15
    # Direct computation: tokens of the deepest encoder map, softmax(q k^T / sqrt(d)) per head.
    with torch.no_grad():
        t = model.lre.tokens(cap.inter.encoder[-1])
        for i, layer in enumerate(model.lre.layers):
            q, k, _ = layer.attn.qkv(layer.norm1(t)).chunk(3, dim=-1)
            heads = [
                (qh @ kh.T / math.sqrt(qh.shape[-1])).softmax(-1)[row]
                for qh, kh in zip(q[0].chunk(2, dim=-1), k[0].chunk(2, dim=-1), strict=True)
            ]
            torch.testing.assert_close(maps[i], torch.stack(heads).view(2, gh, gw))
            t = layer(t)


def test_scf_maps_are_conv_e_of_the_blocks_encoder_input():
    model = build_model(tiny_config())
    cap = traced(model)
    for level in (1, 2):
        maps, s_e, stride = scf_features(cap, level)
        fusion = model.kpb[level - 1].fusion
        assert stride == 2 ** (2 - level)
        with torch.no_grad():  # KPB j fuses encoder map -1-j (gknet.py)
            torch.testing.assert_close(maps, fusion.conv_e(cap.inter.encoder[-level])[0])
        assert torch.equal(s_e, cap.inter.scf[level - 1].s_e[0]) and ((s_e > 0) & (s_e < 1)).all()


@pytest.mark.parametrize(
    ("overrides", "pictures", "note"),
    [
        (
            {"use_lre": False, "use_scf": False},
            {"composite_harmonized", "change_map", "kernel_clusters"},
            "no SCF",
        ),
        (
            {"use_kpb": False, "use_lre": False, "use_scf": False},
            {"composite_harmonized", "change_map"},
            "baseline",
        ),
    ],
)
def test_ablations_skip_missing_figures(tmp_path, overrides, pictures, note):
    comp, mask = make_pair()
    written = ex.explain(Harmonizer(build_model(tiny_config(**overrides)), 32), comp, mask, tmp_path)
    assert set(written) == pictures | {"index"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written.values())
    assert note in written["index"].read_text()


def test_bad_input_is_one_clear_error(tmp_path):
    harmonizer = Harmonizer(build_model(tiny_config()), 32)
    comp, mask = make_pair()
    cases = [
        ((comp, mask.resize((W + 1, H))), {}, "mask is"),
        ((comp, Image.new("L", (W, H))), {}, "mask is empty"),
        ((comp, mask), {"point": (W, 0)}, "outside"),
        ((comp, mask), {"clusters": 1}, "clusters"),
        ((comp, mask), {"level": 3}, "level"),
    ]
    for images, kwargs, message in cases:
        with pytest.raises(GknetError, match=message):
            ex.explain(harmonizer, *images, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_default_weights_missing_is_one_error(monkeypatch, tmp_path, capsys, weights):
    ship_weights(monkeypatch, tmp_path / "shipped")  # an installation that lost its weights file
    comp, mask = make_pair()
    comp.save(tmp_path / "c.png")
    mask.save(tmp_path / "m.png")
    args = ["explain", str(tmp_path / "c.png"), str(tmp_path / "m.png"), "--resolution", "32", "-o"]
    assert main([*args, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gknet explain: error: the shipped weights 'gknet_small' are missing"), err
    assert "\n" not in err and not (tmp_path / "out").exists()

    ship_weights(monkeypatch, tmp_path / "shipped", weights)
    assert main([*args, str(tmp_path / "out"), "--threads", "1"]) == 0
    assert "weights: gknet_small.safetensors" in (tmp_path / "out" / "index.html").read_text()
