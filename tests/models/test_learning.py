"""Learning sanity: the tiny segmentor overfits two synthetic images with filled shapes."""

import numpy as np
import torch
from helpers.models import tiny_segmentor

from x2sam_lightning.models.criterion import SetCriterion
from x2sam_lightning.models.matcher import HungarianMatcher
from x2sam_lightning.types import TrackTargets


def _shapes(size: int = 64) -> tuple[torch.Tensor, list[TrackTargets]]:
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - 20) ** 2 + (xx - 22) ** 2 < 12**2
    square = (yy >= 30) & (yy < 56) & (xx >= 34) & (xx < 58)
    triangle = (yy > 8) & (yy < 56) & (xx > 6) & (xx < yy)
    images, targets = [], []
    for masks, colours in (
        ([disk, square], [(1.0, -1.0, 0.0), (-1.0, 1.0, 1.0)]),
        ([triangle], [(0.0, 0.0, 1.5)]),
    ):
        image = np.full((3, size, size), -0.5, dtype=np.float32)
        for mask, colour in zip(masks, colours):
            image[:, mask] = np.array(colour, dtype=np.float32)[:, None]
        images.append(torch.from_numpy(image))
        m = torch.from_numpy(np.stack(masks))[:, None]
        n = m.shape[0]
        targets.append(
            TrackTargets(
                m,
                torch.zeros(n, dtype=torch.long),
                torch.ones(n, 1, dtype=torch.bool),
                torch.arange(n),
                torch.zeros(n, dtype=torch.bool),
            )
        )
    return torch.stack(images)[:, None], targets


def test_overfits_two_images():
    torch.manual_seed(0)
    model = tiny_segmentor(64, **{"mask_decoder.num_queries": 8, "mask_decoder.num_layers": 2})
    criterion = SetCriterion(1, HungarianMatcher(point_grid=32), point_grid=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pixels, targets = _shapes()
    history = []
    for _ in range(40):
        loss = criterion.weighted(criterion(model(pixels), targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    assert last < 0.2 * first, history
    # The best query of each shape now segments it.
    model.eval()
    with torch.no_grad():
        masks = model(pixels)["pred_masks"][:, :, 0] > 0
    masks = torch.nn.functional.interpolate(masks.float(), size=64) > 0.5
    for b, target in enumerate(targets):
        for gt in target.masks[:, 0]:
            iou = ((masks[b] & gt).flatten(1).sum(1) / (masks[b] | gt).flatten(1).sum(1).clamp(min=1)).max()
            assert iou > 0.7
