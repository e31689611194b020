"""The plain smp baseline `benchmarks/quality.py` holds a fixed recipe against: what a competitor's first notebook
does, with none of compkit's training loop. A U-Net with the recipe's encoder (smp's default decoder, from
scratch), Adam at 1e-3, BCE + Dice, no augmentation, no schedule, images resized to the recipe's size, one model
per fold of the same splits trained for the same epochs, their sigmoid probabilities averaged on the test images,
resized back and cut at 0.5; scored like `compkit score` (per image, the field of view only where the dataset has
one).

Run on its own: .venv/bin/python benchmarks/baseline.py DATA --encoder tu-regnety_002 --size 192 --epochs 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch

from compkit.data.formats import SegmentationDataset, open_dataset
from compkit.data.labelled import open_labelled
from compkit.data.splits import load_splits
from compkit.evaluation.metrics import DiceMeter


def _image(dataset: SegmentationDataset, sample, size: int) -> np.ndarray:
    """(3, size, size) RGB in [0, 1], resized as a plain script does."""
    image = cv2.resize(dataset.read_image(sample), (size, size), interpolation=cv2.INTER_AREA)
    return image[..., ::-1].transpose(2, 0, 1) / 255.0  # BGR -> RGB, channels first


def _tensors(dataset: SegmentationDataset, ids: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, size, size) and masks (N, C, size, size) of ``ids``."""
    by_id = {s.image_id: s for s in dataset.samples}
    images, masks = [], []
    for image_id in ids:
        sample = by_id[image_id]
        mask = dataset.read_mask(sample).astype(np.uint8)
        masks.append(np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) for m in mask]))
        images.append(_image(dataset, sample, size))
    return torch.tensor(np.stack(images), dtype=torch.float32), torch.tensor(np.stack(masks), dtype=torch.float32)


def train_fold(
    images: torch.Tensor, masks: torch.Tensor, encoder: str, epochs: int, batch_size: int, seed: int
) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=masks.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    bce, dice = torch.nn.BCEWithLogitsLoss(), smp.losses.DiceLoss("multilabel", from_logits=True)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            logits = model(images[batch])
            loss = bce(logits, masks[batch]) + dice(logits, masks[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def plain_smp(
    data: Path,
    encoder: str,
    size: int,
    epochs: list[int] | int,
    splits: Path | None = None,
    batch_size: int = 2,
    seed: int = 0,
) -> dict:
    """Train one plain U-Net per fold of ``splits`` (``epochs`` each, or per fold), average them on the test split:
    the test mean dice per image, the pooled dice, and the wall time."""
    started = time.time()
    train_set = open_dataset(data, "train")
    folds = load_splits(data, splits)["folds"]
    per_fold = epochs if isinstance(epochs, list) else [epochs] * len(folds)
    models = []
    for k, fold in enumerate(folds):
        images, masks = _tensors(train_set, fold["train"], size)
        models.append(train_fold(images, masks, encoder, per_fold[k], batch_size, seed + k))
    test_set = open_labelled(data, "test")
    meter = DiceMeter(test_set.classes)
    with torch.no_grad():
        for sample in test_set.samples:
            truth = test_set.read_mask(sample)
            height, width = truth.shape[1:]
            image = torch.tensor(_image(test_set, sample, size)[None], dtype=torch.float32)  # its mask read once
            probability = torch.stack([torch.sigmoid(m(image)) for m in models]).mean(0)[0].numpy()
            full = np.stack([cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR) for p in probability])
            pred = full > 0.5
            ignore = test_set.read_ignore(sample, (height, width))
            if ignore is not None:  # the field of view only, as `compkit score` counts
                keep = ~ignore.astype(bool)
                pred, truth = pred & keep, truth & keep
            meter.update(pred, truth)
    return {
        "dice": meter.mean(),
        "pooled": float(meter.pooled().mean()),
        "size": size,
        "seconds": time.time() - started,
        "epochs": per_fold,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--encoder", default="tu-regnety_002")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--splits", type=Path, default=None)
    args = parser.parse_args()
    result = plain_smp(args.data, args.encoder, args.size, args.epochs, splits=args.splits)
    print(
        f"plain smp U-Net ({args.encoder}, {args.size} px, {args.epochs} epochs): test mean dice {result['dice']:.4f}, "
        f"pooled {result['pooled']:.4f}, {result['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
