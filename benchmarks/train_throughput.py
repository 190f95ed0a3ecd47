"""Images per second of one trial's training loop, against the loop most code is written as.

Ours: the split on the device as uint8, one randperm per epoch, augmentation of whole
batches on the device, bf16 autocast and channels_last on CUDA, no host sync per step.
Reference: a torchvision ``Dataset`` with per-image transforms, a ``DataLoader``, fp32.
Both train the same network with the same optimizer; figures are training images per
second after a warm-up epoch. Prints figures; asserts nothing.

    python benchmarks/train_throughput.py                  # digits on the CPU
    python benchmarks/train_throughput.py --device cuda    # + 50,000 synthetic 32x32x3
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from automl.data import Split, load_dataset
from automl.training.augment import Augment
from automl.training.config import ArchConfig, AugConfig, OptimConfig, StageConfig, TrainConfig
from automl.training.loop import Normalizer, Setup, fit, make_optimizer
from automl.training.networks import build_model

CLASSES = 10  # both data sets compared have ten classes

AIRBENCH = ArchConfig(
    stages=(
        StageConfig(width=64, convs=2),
        StageConfig(width=256, convs=2),
        StageConfig(width=256, convs=2),
    ),
    activation="gelu",
    pooling="max",
)
DIGITS_NET = ArchConfig(stages=(StageConfig(width=32, convs=2), StageConfig(width=64, convs=2)))


class ImageDataset(Dataset):  # type: ignore[type-arg]
    """The common way: per-image PIL conversion and transforms in ``__getitem__``."""

    def __init__(self, split: Split, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.images = split.hwc()
        self.labels = split.labels
        pad = max(1, split.images.shape[-1] // 8)
        self.transform = transforms.Compose(
            [
                transforms.ToPILImage(),
                transforms.RandomCrop(split.images.shape[-1], padding=pad),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        image = image[..., 0] if image.shape[2] == 1 else image
        return self.transform(image), self.labels[index]


def reference(model, split, mean, std, *, batch: int, epochs: int, device, workers: int) -> float:
    loader = DataLoader(
        ImageDataset(split, mean, std), batch_size=batch, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=device.type == "cuda",
    )  # fmt: skip
    model.to(device).train()
    optimizer = make_optimizer(model, OptimConfig(name="sgd", lr=0.05, nesterov=True))
    speeds = []
    for epoch in range(epochs):
        start, seen = time.perf_counter(), 0
        for images, labels in loader:
            x = images.to(device, non_blocking=True)
            y = labels.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch:  # the first epoch warms up
            speeds.append(seen / (time.perf_counter() - start))
    return float(np.mean(speeds))


def ours(model, split, val, mean, std, *, batch: int, epochs: int, device) -> float:
    setup = Setup(
        optim=OptimConfig(name="sgd", lr=0.05, nesterov=True),
        schedule=TrainConfig(batch_size=batch, epochs=epochs, schedule="onecycle"),
        augment=Augment(AugConfig(strength=0.5, translate=True, flip=True)),
        norm=Normalizer(mean, std), device=device, seed=0,
    )  # fmt: skip
    history = fit(model, split, val, setup)
    return float(np.mean([e.images_per_second for e in history[1:]]))


def compare(
    name: str,
    arch: ArchConfig,
    train: Split,
    val: Split,
    *,
    batch,
    epochs,
    device,
    workers,
) -> None:
    from automl.data import channel_stats

    mean, std = channel_stats(train.images)
    shape = (train.images.shape[1], tuple(train.images.shape[2:]))
    torch.manual_seed(0)
    fast = ours(
        build_model(arch, shape[0], shape[1], CLASSES),
        train,
        val,
        mean,
        std,
        batch=batch,
        epochs=epochs,
        device=device,
    )
    torch.manual_seed(0)
    slow = reference(
        build_model(arch, shape[0], shape[1], CLASSES),
        train,
        mean,
        std,
        batch=batch,
        epochs=epochs,
        device=device,
        workers=workers,
    )
    print(
        f"{name:<44} ours {fast:>10,.0f} img/s   reference {slow:>10,.0f} img/s   "
        f"ratio {fast / slow:5.2f}x"
    )


def peak_memory_per_trial(train: Split, val: Split, device: torch.device, trials: int = 3) -> None:
    """A trial frees what it allocated: the peak of trial k+1 does not grow with k."""
    from automl.data import channel_stats

    mean, std = channel_stats(train.images)
    for trial in range(trials):
        torch.cuda.reset_peak_memory_stats(device)
        model = build_model(AIRBENCH, 3, (32, 32), 10)
        ours(model, train, val, mean, std, batch=512, epochs=2, device=device)
        del model
        torch.cuda.empty_cache()
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        left = torch.cuda.memory_allocated(device) / 2**20
        print(f"trial {trial}: peak device memory {peak:,.0f} MB, still allocated {left:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--synthetic", action="store_true", help="the 32x32x3 run on a CPU too")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    digits = load_dataset("digits")
    compare("digits 8x8x1, 32/64 CNN, batch 64", DIGITS_NET, digits.train, digits.val,
            batch=64, epochs=args.epochs, device=device, workers=0)  # fmt: skip
    if device.type == "cuda" or args.synthetic:
        torch.backends.cudnn.benchmark = True
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, 10, (args.images,), generator=gen)
        train, val = Split(images, labels), Split(images[:5000], labels[:5000])
        if device.type == "cuda":
            print(f"GPU: {torch.cuda.get_device_name(device)}")
        name = f"synthetic {args.images:,} 32x32x3, airbench 64/256/256, batch 512"
        compare(name, AIRBENCH, train, val, batch=512, epochs=args.epochs, device=device,
                workers=min(8, os.cpu_count() or 1))  # fmt: skip
        if device.type == "cuda":
            peak_memory_per_trial(train, val, device)


if __name__ == "__main__":
    main()
