"""The Harmonizer API: every input type round-trips, any size, mask semantics, loading."""

from __future__ import annotations

import dataclasses
import json
import warnings
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from gknet import Harmonizer
from gknet.config import FullResConfig, InferenceConfig, Normalization, load_config
from gknet.errors import GknetError
from gknet.inference.harmonizer import EmptyMaskWarning
from gknet.inference.release import save_release
from gknet.models import build_model
from gknet.models.memory import check_resolution, pass_bytes
from tests.conftest import REPO, ship_weights, tiny_config

TINY = tiny_config()
H, W = 45, 70


@pytest.fixture(scope="module")
def harmonizer() -> Harmonizer:
    torch.manual_seed(0)
    return Harmonizer(build_model(TINY), resolution=32)


def inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    comp = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[10:35, 20:55] = 255
    mask[10:35, 20] = 100  # a soft edge
    return comp, mask


def test_types_round_trip_and_agree(harmonizer):
    comp, mask = inputs()
    outside = mask == 0
    as_uint8 = harmonizer(comp, mask)
    assert as_uint8.dtype == np.uint8 and as_uint8.shape == comp.shape
    as_pil = harmonizer(Image.fromarray(comp), Image.fromarray(mask))
    assert isinstance(as_pil, Image.Image) and as_pil.mode == "RGB" and as_pil.size == (W, H)
    as_f32 = harmonizer(comp.astype(np.float32) / 255, mask.astype(np.float32) / 255)
    as_f64 = harmonizer(comp / 255.0, mask > 0)
    assert as_f32.dtype == np.float32 and as_f64.dtype == np.float64 and as_f32.shape == comp.shape
    tensor = torch.from_numpy(comp).permute(2, 0, 1).double() / 255
    as_tensor = harmonizer(tensor, torch.from_numpy(mask).float() / 255)
    assert as_tensor.dtype == torch.float64 and as_tensor.shape == (3, H, W)
    batch = harmonizer(tensor[None].float().repeat(2, 1, 1, 1), torch.from_numpy(mask)[None, None] / 255.0)
    assert batch.shape == (2, 3, H, W) and batch.dtype == torch.float32

    assert np.array_equal(np.asarray(as_pil), as_uint8)
    assert np.abs(as_f32 * 255 - as_uint8).max() <= 0.5 + 1e-3  # uint8 result = rounded float result
    np.testing.assert_allclose(as_tensor.permute(1, 2, 0).numpy(), as_f32, atol=1e-6)
    torch.testing.assert_close(batch[0], batch[1])
    # Outside the mask, every type returns the input bit for bit; inside, the model acts.
    assert np.array_equal(as_uint8[outside], comp[outside])
    assert np.array_equal(as_f64[outside], (comp / 255.0)[outside])
    keep = torch.from_numpy(outside)
    assert torch.equal(as_tensor.permute(1, 2, 0)[keep], tensor.permute(1, 2, 0)[keep])
    assert (as_uint8[mask == 255] != comp[mask == 255]).any()


def test_network_size_input_is_the_model_output(harmonizer):
    g = torch.Generator().manual_seed(1)
    comp = torch.rand(1, 3, 32, 32, generator=g)
    mask = (torch.rand(1, 1, 32, 32, generator=g) > 0.5).float()
    with torch.no_grad():
        expected = harmonizer.model(comp, mask)
    assert torch.equal(harmonizer.harmonize_tensor(comp, mask), expected)


def test_cpu_network_runs_channels_last_with_the_same_outputs():
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    reference = build_model(TINY).eval()
    reference.load_state_dict(model.state_dict())
    harmonizer = Harmonizer(model, resolution=32)
    convs = [m.weight for m in harmonizer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert harmonizer.channels_last
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    g = torch.Generator().manual_seed(2)
    comp = torch.rand(2, 3, 32, 32, generator=g)
    mask = (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float()
    with torch.no_grad():
        expected = reference(comp, mask)
    torch.testing.assert_close(harmonizer.harmonize_tensor(comp, mask), expected, atol=1e-5, rtol=0)


def test_any_size_including_smaller_than_the_network(harmonizer):
    for h, w in ((7, 9), (31, 200), (300, 17)):
        comp = torch.rand(3, h, w)
        mask = torch.zeros(h, w)
        mask[h // 3 :, : w // 2] = 1
        out = harmonizer(comp, mask)
        assert out.shape == (3, h, w)
        assert torch.equal(out[:, mask == 0], comp[:, mask == 0])
        assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_empty_mask_returns_input_with_warning(harmonizer):
    comp, mask = inputs()
    with pytest.warns(EmptyMaskWarning, match="empty"):
        out = harmonizer(comp, np.zeros_like(mask))
    assert np.array_equal(out, comp)
    batch = torch.rand(2, 3, H, W)
    masks = torch.zeros(2, 1, H, W)
    masks[1, :, 5:20, 5:20] = 1
    with pytest.warns(EmptyMaskWarning, match="image 0 of the batch"):
        out = harmonizer.harmonize_tensor(batch, masks)
    assert torch.equal(out[0], batch[0]) and not torch.equal(out[1], batch[1])


def test_mask_size_mismatch_fails_or_is_resized(harmonizer):
    comp, mask = inputs()
    small = np.asarray(Image.fromarray(mask).resize((W // 2, H // 2), Image.NEAREST))
    with pytest.raises(GknetError, match=f"mask is {W // 2}x{H // 2} but the composite is {W}x{H}"):
        harmonizer(comp, small)
    out = harmonizer(comp, small, resize_mask=True)
    assert out.shape == comp.shape
    assert np.array_equal(out[:8], comp[:8])  # rows far above the (resized) foreground


def test_threshold_binarises_the_soft_mask(harmonizer):
    comp, _ = inputs()
    soft = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))
    out = harmonizer(comp, soft, threshold=0.5)
    below = soft < 0.5
    assert np.array_equal(out[below], comp[below]) and (out[~below] != comp[~below]).any()
    soft_out = harmonizer(comp, soft)
    assert (
        np.array_equal(soft_out[:, 0], comp[:, 0]) and (soft_out[:, 1 : W // 2] != comp[:, 1 : W // 2]).any()
    )
    with pytest.raises(GknetError, match="threshold"):
        harmonizer(comp, soft, threshold=1.5)


@pytest.mark.parametrize(
    ("composite", "mask", "message"),
    [
        (np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8), "H x W x 3"),
        (np.full((H, W, 3), 2.0), np.zeros((H, W)), r"\[0, 1\]"),
        (np.zeros((H, W, 3), np.int32), np.zeros((H, W)), "uint8 or float"),
        (torch.zeros(4, H, W), torch.zeros(H, W), r"\[3, H, W\]"),
        (np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 2)), "H x W or H x W x 1"),
        (np.zeros((H, W, 3), np.uint8), np.full((H, W), np.nan), r"\[0, 1\]"),
        ("image.png", np.zeros((H, W)), "PIL image, numpy array or torch tensor"),
    ],
)
def test_bad_arguments_raise_clear_errors(harmonizer, composite, mask, message):
    with pytest.raises(GknetError, match=message):
        harmonizer(composite, mask)


def test_missing_shipped_weights_is_one_clear_error(tmp_path, monkeypatch):
    ship_weights(monkeypatch, tmp_path / "shipped")  # an installation that lost its weights file
    for name in ("gknet_small", "default"):
        with pytest.raises(GknetError, match="the shipped weights 'gknet_small' are missing"):
            Harmonizer.from_pretrained(name)
    with pytest.raises(GknetError, match=r"not found: gknet_huge \(shipped names: gknet_small\)"):
        Harmonizer.from_pretrained("gknet_huge")


def test_from_pretrained_takes_a_shipped_name_or_a_path(tmp_path, monkeypatch):
    torch.manual_seed(3)
    model = build_model(TINY)
    path = save_release(model, TINY, tmp_path / "tiny.safetensors")
    ship_weights(monkeypatch, tmp_path / "shipped", path)
    comp, mask = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real weights: no warning
        by_name = Harmonizer.from_pretrained(resolution=32, device="auto")
    by_path = Harmonizer.from_pretrained(path, resolution=32)
    assert by_path.name == "tiny" and by_name.name == "gknet_small"
    assert np.array_equal(by_name(comp, mask), by_path(comp, mask))
    assert np.array_equal(by_path(comp, mask), Harmonizer(model.eval(), resolution=32)(comp, mask))
    with pytest.raises(GknetError, match="not found"):
        Harmonizer.from_pretrained(tmp_path / "nope.safetensors")
    with pytest.raises(GknetError, match="resolution"):
        Harmonizer(model, resolution=4)


def test_from_pretrained_reads_the_release_json_once(tiny_release, monkeypatch):
    """One read: the model and its inference settings come from the same version of the file."""
    import gknet.inference.release as release

    read, reads = release.read_release_info, []
    monkeypatch.setattr(release, "read_release_info", lambda path: reads.append(path) or read(path))
    harmonizer = Harmonizer.from_pretrained(tiny_release)
    assert reads == [tiny_release] and harmonizer.settings == InferenceConfig() and harmonizer.name == "tiny"


def test_the_library_device_default_is_the_commands(monkeypatch):
    import inspect

    from gknet.cli import build_parser
    from gknet.evaluation.comparison import comparison_figure
    from gknet.evaluation.protocol import evaluate, load_method

    parser = build_parser()
    for command in (["harmonize", "c.png", "m.png", "-o", "o.png"], ["evaluate"]):
        assert parser.parse_args(command).device == "auto"
    for function in (Harmonizer, Harmonizer.from_pretrained, load_method, evaluate, comparison_figure):
        assert inspect.signature(function).parameters["device"].default == "auto", function
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Harmonizer(build_model(TINY)).device == torch.device("cpu")  # auto: CUDA if available


def test_release_json_carries_the_inference_settings(tmp_path):
    torch.manual_seed(4)
    norm = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    model = build_model(TINY, norm)
    fullres = FullResConfig(radius=3, eps=1e-3, weight_power=2)
    settings = InferenceConfig(resolution=48, train_size=24, normalization=norm, fullres=fullres)
    path = save_release(model, TINY, tmp_path / "tiny.safetensors", inference=settings)
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["inference"] == {
        "resolution": 48,
        "train_size": 24,
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]},
        "fullres": {"radius": 3, "eps": 1e-3, "weight_power": 2},
    }
    loaded = Harmonizer.from_pretrained(path)
    assert loaded.settings == settings and loaded.resolution == 48
    assert loaded.model.normalization == norm
    assert torch.equal(loaded.model.std.flatten(), torch.tensor([0.25, 0.5, 1.0]))
    # The settings are what runs: the same model with them by hand gives the same result.
    comp, mask = inputs()
    by_hand = Harmonizer(model.eval(), settings=settings)
    assert np.array_equal(loaded(comp, mask), by_hand(comp, mask))
    plain = Harmonizer(model, settings=InferenceConfig(normalization=norm))  # default resolution, transfer
    assert not np.array_equal(loaded(comp, mask), plain(comp, mask))
    assert Harmonizer.from_pretrained(path, resolution=32).resolution == 32  # an explicit override wins
    # A release written before the settings existed runs with the defaults.
    del info["inference"]
    path.with_suffix(".json").write_text(json.dumps(info))
    assert Harmonizer.from_pretrained(path).settings == InferenceConfig()
    with pytest.raises(GknetError, match="normalization"):
        save_release(build_model(TINY), TINY, tmp_path / "bad.safetensors", inference=settings)


def test_trace_is_the_harmonized_pass(harmonizer):
    comp = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 1, H, W)
    mask[..., 10:30, 20:50] = 1
    out, inter = harmonizer.trace_tensor(comp, mask)
    assert torch.equal(out, harmonizer.harmonize_tensor(comp, mask))
    assert inter.size == (32, 32) and inter.output.shape == (1, 3, 32, 32)  # the network resolution
    with pytest.raises(GknetError, match="mask is empty"), pytest.warns(EmptyMaskWarning):
        harmonizer.trace_tensor(comp, torch.zeros_like(mask))


class _TensorBytes(TorchDispatchMode):
    """Bytes of the tensors the ops under it create: their sum, and the peak of those alive at once."""

    def __init__(self):
        super().__init__()
        self.total = self.live = self.peak = 0
        self.alive: set[int] = set()

    def _freed(self, pointer: int, size: int) -> None:
        self.live -= size
        self.alive.discard(pointer)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            storage = t.untyped_storage() if isinstance(t, torch.Tensor) else None
            if storage is None or storage.nbytes() == 0 or storage.data_ptr() in self.alive:
                continue  # not a tensor, empty, or a view / in-place result of a counted one
            size = storage.nbytes()
            self.alive.add(storage.data_ptr())
            self.total, self.live = self.total + size, self.live + size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, storage.data_ptr(), size)
        return out


def _pass_tensor_bytes(cfg, resolution: int) -> _TensorBytes:
    model = build_model(cfg).eval()
    comp = torch.rand(1, 3, resolution, resolution)
    mask = torch.zeros(1, 1, resolution, resolution)
    mask[..., resolution // 4 : resolution // 2, :] = 1
    with torch.no_grad(), _TensorBytes() as counted:
        model(comp, mask)
    return counted


@pytest.mark.parametrize(("levels", "mid_k"), [(1, 2.0), (2, 0.5)])
def test_pass_bytes_counts_the_s2am_maps(levels, mid_k):
    plain = tiny_config(widths=(8, 16, 32), kpb_levels=3, norm="batch")
    attended = dataclasses.replace(plain, use_s2am=True, s2am_levels=levels, s2am_mid_k=mid_k)
    res = 64
    with_s2am, without = _pass_tensor_bytes(attended, res), _pass_tensor_bytes(plain, res)
    # the S2AM blocks' share of the estimate is what they allocate in a pass (a few 1-channel
    # mask maps aside), and the estimate stays above the pass's measured peak
    added = pass_bytes(attended, res) - pass_bytes(plain, res)
    assert added == pytest.approx(with_s2am.total - without.total, rel=0.05)
    assert with_s2am.peak < pass_bytes(attended, res)


def test_resolution_limit_of_gknet_small_is_unchanged():
    cfg = load_config(REPO / "configs" / "gknet_small.yaml").model
    check_resolution(cfg, 1095)
    with pytest.raises(GknetError, match="use at most 1095"):
        check_resolution(cfg, 1096)


def _lalonde_tensors(names) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    from gknet.io.images import load_mask, load_rgb, to_tensor_image
    from tests.conftest import require_shared

    root = require_shared("data", "lalonde_composites")
    comps = [to_tensor_image(load_rgb(root / "composites" / f"{n}.jpg"))[None] for n in names]
    masks = [to_tensor_image(load_mask(root / "masks" / f"{n}.png"))[None] for n in names]
    return comps, masks


def test_batched_equals_one_at_a_time(harmonizer):
    """Mixed sizes in one list (one needing no resize): one network pass, same results as one by one.

    Not bit for bit: oneDNN picks its convolution algorithm by batch size, so sums may run in
    another order (measured below 1e-6 in [0, 1] units; see docs/harmonize.md)."""
    g = torch.Generator().manual_seed(2)
    sizes = ((32, 32), (45, 70), (7, 90), (64, 48))
    comps = [torch.rand(1, 3, h, w, generator=g) for h, w in sizes]
    masks = [(torch.rand(1, 1, h, w, generator=g) > 0.4).float() for h, w in sizes]
    calls = []
    handle = harmonizer.model.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    try:
        batched = harmonizer.harmonize_tensors(comps, masks)
    finally:
        handle.remove()
    assert calls == [len(sizes)]  # one network pass for all four
    for comp, mask, out in zip(comps, masks, batched, strict=True):
        single = harmonizer.harmonize_tensor(comp, mask)
        assert out.shape == comp.shape and (out - single).abs().max() <= 1e-6
        assert torch.equal(out[mask.expand_as(out) == 0], comp[mask.expand_as(comp) == 0])


def test_batched_equals_one_at_a_time_with_the_shipped_model_on_real_composites():
    shipped = Harmonizer.from_pretrained()
    comps, masks = _lalonde_tensors(("image_001084", "image_001900", "image_002020"))  # 256x256, 341x256
    batched = shipped.harmonize_tensors(comps, masks)
    worst = max(
        float((out - shipped.harmonize_tensor(c, m)).abs().max())
        for c, m, out in zip(comps, masks, batched, strict=True)
    )
    assert worst <= 1e-6, worst


def test_batch_with_an_empty_mask_names_it_and_returns_it_unchanged(harmonizer):
    comps = [torch.rand(1, 3, H, W) for _ in range(3)]
    masks = [torch.ones(1, 1, H, W), torch.zeros(1, 1, H, W), torch.ones(1, 1, H, W)]
    with pytest.warns(EmptyMaskWarning, match="^b.png: the mask is empty"):
        out = harmonizer.harmonize_tensors(comps, masks, labels=["a.png", "b.png", "c.png"])
    assert torch.equal(out[1], comps[1]) and not torch.equal(out[0], comps[0])
    with pytest.raises(GknetError, match="2 composites, 1 masks"):
        harmonizer.harmonize_tensors(comps[:2], masks[:1])
    assert harmonizer.harmonize_tensors([], []) == []


class _NanModel(torch.nn.Module):
    """Broken weights: NaN for the last image of each batch, the input for the others."""

    def forward(self, composite, mask):
        out = composite.clone()
        out[-1] = float("nan")
        return out


def test_non_finite_network_output_is_refused_also_in_a_batch():
    broken = Harmonizer(_NanModel(), resolution=32)
    comps = [torch.rand(1, 3, 32, 32), torch.rand(1, 3, H, W)]  # at the network size, and resized
    masks = [torch.ones(1, 1, 32, 32), torch.ones(1, 1, H, W)]
    for c, m in zip(comps, masks, strict=True):
        with pytest.raises(GknetError, match="NaN or infinite"):
            broken.harmonize_tensor(c, m)
    with pytest.raises(GknetError, match="NaN or infinite"):
        broken.harmonize_tensors(comps, masks)
