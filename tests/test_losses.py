import torch

from gknet.models.losses import fn_mse_loss


def test_fn_mse_by_hand():
    # Image 1: 2x2, foreground of 1 pixel; squared errors sum to 0.25 + 0.01 = 0.26.
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.zeros(2, 3, 2, 2)
    pred[0, 0, 0, 0] = 0.5
    pred[0, 2, 1, 1] = 0.1
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0, 0] = 1
    # Image 2: full 2x2 mask, squared error 1.0 in one value.
    pred[1, 1, 0, 1] = 1.0
    mask[1] = 1
    # A_min = 100 dominates both tiny areas: (0.26 / 100 + 1.0 / 100) / 2.
    assert torch.isclose(fn_mse_loss(pred, target, mask, a_min=100.0), torch.tensor(0.0063))
    # With A_min = 1 the foreground areas (1 and 4 pixels) count: (0.26 / 1 + 1.0 / 4) / 2.
    assert torch.isclose(fn_mse_loss(pred, target, mask, a_min=1.0), torch.tensor(0.255))
