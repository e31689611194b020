from __future__ import annotations

import pytest
import torch

from compkit.inference.tta import TTA_VIEWS, gaussian_weights, predict_logits, sliding_window_logits, window_starts


class Pointwise(torch.nn.Module):
    """A 1x1 convolution: equivariant to flips, rotations and translations, so every TTA view and tiling must
    give back exactly the plain prediction."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 5, 1)
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.conv(x)


@pytest.mark.parametrize("tta", ["hflip", "vflip", "d4"])
def test_tta_de_augmentation_is_exact(tta):
    model = Pointwise()
    x = torch.randn(2, 3, 16, 16)
    plain = model(x)
    model.calls.clear()
    out = predict_logits(model, x, tta)
    assert torch.allclose(out, plain, atol=1e-6)
    assert model.calls == [(2 * len(TTA_VIEWS[tta]), 3, 16, 16)], "all views in one batch"


def test_tta_undoes_a_flip_sensitive_model():
    """A model that is not flip-equivariant gives the average of the view and the de-flipped flipped view."""
    model = torch.nn.Conv2d(1, 1, (1, 3), padding=(0, 1), bias=False)
    torch.nn.init.constant_(model.weight, 0.0)
    model.weight.data[0, 0, 0, 0] = 1.0  # output = left neighbour
    x = torch.arange(8.0).reshape(1, 1, 1, 8)
    out = predict_logits(model, x, "hflip")
    expected = (model(x) + model(x.flip(3)).flip(3)) / 2
    assert torch.allclose(out, expected)


def test_scales_keep_shape():
    model = Pointwise()
    assert predict_logits(model, torch.randn(1, 3, 64, 64), "scales").shape == (1, 5, 64, 64)


def test_one_window_equals_whole_image():
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(sliding_window_logits(model, x, window=32), predict_logits(model, x))
    assert torch.equal(sliding_window_logits(model, x, window=64), predict_logits(model, x))


def test_tiles_blend_back_to_the_whole_image_for_a_pointwise_model():
    model = Pointwise()
    x = torch.randn(2, 3, 40, 56)
    tiled = sliding_window_logits(model, x, window=16, overlap=0.5, batch_size=3)
    assert torch.allclose(tiled, model(x), atol=1e-5)


def test_window_starts_cover_the_image():
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]
    assert window_starts(41, 16, 8) == [0, 8, 16, 24, 25]
    assert window_starts(10, 16, 8) == [0]


def test_gaussian_weights_peak_in_the_centre():
    w = gaussian_weights(9)
    assert w[4, 4] == w.max() == 1 and w[0, 0] > 0
