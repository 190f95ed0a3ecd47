"""Write a CIFAR-10-shaped data set (50,000 + 10,000 32x32x3 images) in CIFAR's own pickle
format, for searches on machines with no network. Each class is a colored pattern with
noise, so there is something to learn.

    python benchmarks/make_cifar_shaped.py DATA_DIR [--train 50000] [--test 10000]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    labels = rng.integers(0, 10, n)
    y, x = np.mgrid[0:32, 0:32] / 32.0
    out = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for label in range(10):
        members = np.flatnonzero(labels == label)
        phase = np.array([label * 0.6, label * 1.1, label * 1.7])[:, None, None]
        pattern = 127 + 80 * np.sin((label + 1) * 3 * x + (10 - label) * 2 * y + phase)
        noise = rng.normal(0, 40, (len(members), 3, 32, 32))
        shift = rng.integers(-4, 5, (len(members), 1, 1, 1))
        out[members] = np.clip(pattern[None] + noise + 8 * shift, 0, 255).astype(np.uint8)
    return out.reshape(n, -1), labels.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    args = parser.parse_args()
    folder = args.data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per_batch = args.train // 5
    for index in range(1, 6):
        data, labels = images(per_batch, rng)
        (folder / f"data_batch_{index}").write_bytes(pickle.dumps({"data": data, "labels": labels}))
    data, labels = images(args.test, rng)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": labels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": NAMES}))
    print(f"wrote {5 * per_batch} + {args.test} CIFAR-10-shaped images to {folder}")


if __name__ == "__main__":
    main()
