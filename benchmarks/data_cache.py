"""Image-folder loading: decode-and-cache time and size, the second load, peak memory.

Writes a folder of JPEGs (10 classes), then measures in fresh processes:
1. the first load (inspect, clean, decode, write the cache);
2. the second load (manifest and cache reused: nothing decoded);
3. a one-trial search on the folder under ``/usr/bin/time -v`` (peak host memory),
   twice: the second one starts from the cache.

    python benchmarks/data_cache.py [--images 2000] [--side 64] [--trials 1]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

LOAD = """
import sys, time
from pathlib import Path
start = time.perf_counter()
from automl.data import load_dataset
imported = time.perf_counter()
data = load_dataset("imagefolder:" + sys.argv[1], Path(sys.argv[2]))
done = time.perf_counter()
print(f"{imported - start:.3f} {done - imported:.3f} {data.report.decoded} {data.report.cache}")
"""


def make_folder(root: Path, images: int, side: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side] / side
    for i in range(images):
        label = i % 10
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack(
            [np.sin((label + 1) * x * 3 + phase[c]) + np.cos(y * 4 + phase[c]) for c in range(3)],
            -1,
        )
        array = np.clip((base + 2) * 60 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:06d}.jpg", quality=90)


def timed_load(folder: Path, data_dir: Path) -> tuple[float, float, int, Path]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(folder), str(data_dir)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1]), int(out[2]), Path(out[3])


def search(folder: Path, data_dir: Path, work: Path, trials: int) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of a short search."""
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "automl", "search",
        "--dataset", f"imagefolder:{folder}", "--data-dir", str(data_dir),
        "--trials", str(trials), "--max-epochs", "1", "--device", "cpu",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return wall, peak_kb / 1024


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--trials", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, data_dir, work = Path(tmp, "images"), Path(tmp, "data"), Path(tmp, "work")
        work.mkdir()
        start = time.perf_counter()
        make_folder(folder, args.images, args.side)
        print(f"folder: {args.images} JPEGs of {args.side}x{args.side}x3, {size_mb(folder):.1f} MB "
              f"(written in {time.perf_counter() - start:.1f} s)")  # fmt: skip
        imports, first, decoded, cache = timed_load(folder, data_dir)
        print(f"first load:  {first:.2f} s ({decoded} images decoded; imports {imports:.2f} s)")
        print(f"cache:       {size_mb(cache):.1f} MB in {cache}")
        imports, second, decoded, _ = timed_load(folder, data_dir)
        print(f"second load: {second:.2f} s ({decoded} images decoded)")
        for run in ("first", "second"):
            wall, peak = search(
                folder, data_dir if run == "second" else Path(tmp, "fresh"), work, args.trials
            )
            what = f"{run} search ({args.trials} trial, 1 epoch)"
            print(f"{what}: {wall:.1f} s wall, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
