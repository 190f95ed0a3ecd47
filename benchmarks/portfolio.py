"""A portfolio for a space, chosen by a benchmark across several data sets.

Trains the space's baseline and ``--candidates`` configurations drawn at random from the
space (seeded) on each data set, once each, with no search and no pruning, and records
each one's validation accuracy and seconds. The portfolio is then chosen greedily, as
AutoGluon chooses its zero-shot portfolios: the baseline first, then each time the
configuration that most raises the mean over the data sets of the best accuracy reached
so far by the portfolio (each data set's accuracies divided by the best any candidate
reached there, so no data set weighs more for being easy); of equal gains, the cheaper.
Prints every candidate's accuracies and seconds, the portfolio's score as it grows, and
the portfolio as a ``portfolio:`` block for the space file. Asserts nothing.

Data sets (``--datasets``): ``digits`` (8x8 grey, built in), ``cifar32`` (a stratified
subset of CIFAR-10's JPEG photos, ``--per-class`` training images a class), ``cifar64``
(the same photos at 64 px) and ``cifar-grey`` (the same photos in grey, 32 px).

    python benchmarks/portfolio.py --space photos [--datasets cifar32 cifar64 cifar-grey]
        [--candidates 15] [--size 6] [--per-class 100] [--epochs-cap 20] [--seed 0]
        [--scratch DIR] [--device auto]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from _photos import ARCHIVE, subset, unpack
from PIL import Image

from automl.data import ImageData, load_dataset
from automl.search.space import load_space
from automl.search.space.bundled import resolve_space
from automl.search.space.space import SearchSpace
from automl.training.config import TrialConfig
from automl.training.device import resolve_device
from automl.training.train import Overrides, fit_config, seeded_network

PHOTOS = {"cifar32": 32, "cifar64": 64, "cifar-grey": 32}


def grey_copy(folder: Path) -> Path:
    """``folder``'s photos in grey, written once beside it."""
    target = folder.parent / f"{folder.name}-grey"
    if target.is_dir():
        return target
    for source in sorted(folder.rglob("*.jpg")):
        out = target / source.relative_to(folder)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(source).convert("L").save(out, quality=95)
    return target


def load(name: str, args: argparse.Namespace) -> ImageData:
    if name == "digits":
        return load_dataset("digits")
    folder = subset(unpack(args.scratch, ARCHIVE), args.per_class, args.per_class)
    if name == "cifar-grey":
        folder = grey_copy(folder)
    cache = args.scratch / "cache"
    return load_dataset(f"imagefolder:{folder}", cache, image_size=PHOTOS[name])


def candidates(space: SearchSpace, count: int, seed: int) -> list[dict[str, Any]]:
    """The baseline, then ``count`` configurations drawn at random (the sampled params
    only, as a portfolio entry is written)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = [dict(space.baseline)]
    while len(drawn) < count + 1:
        trial = study.ask()
        space.sample(trial)
        if trial.params not in drawn:
            drawn.append(dict(trial.params))
        study.tell(trial, 0.0)
    return drawn


def train(
    space: SearchSpace, params: dict[str, Any], data: ImageData, args: Any
) -> tuple[float, float]:
    """Validation accuracy at the end of the configuration's schedule (capped), and seconds."""
    config = TrialConfig.from_params(space.sample(optuna.trial.FixedTrial(params)))
    epochs = min(config.train.epochs, args.epochs_cap)
    start = time.perf_counter()
    network = seeded_network(config, data, args.seed)
    results = fit_config(network, config, data, device=resolve_device(args.device),
                         seed=args.seed, overrides=Overrides(epochs=epochs))  # fmt: skip
    return results[-1].val_acc, time.perf_counter() - start


def greedy(scores: np.ndarray, seconds: np.ndarray, size: int) -> list[tuple[int, float]]:
    """Portfolio members (candidate index) with the mean normalised best-so-far score once
    each is added; candidate 0 (the baseline) first."""
    normal = scores / scores.max(axis=0, keepdims=True)
    chosen, best = [0], normal[0].copy()
    steps = [(0, float(best.mean()))]
    while len(chosen) < min(size, len(scores)):
        gains = [
            (float(np.maximum(best, normal[i]).mean()), -float(seconds[i].sum()), i)
            for i in range(len(scores)) if i not in chosen
        ]  # fmt: skip
        score, _, pick = max(gains)
        if score <= steps[-1][1] + 1e-9:
            break  # nothing left adds anything on any data set
        chosen.append(pick)
        best = np.maximum(best, normal[pick])
        steps.append((pick, score))
    return steps


def _short(value: Any) -> Any:
    """Four significant digits of a float: a portfolio entry is read by people."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="photos")
    parser.add_argument("--datasets", nargs="+", default=list(PHOTOS),
                        choices=["digits", *PHOTOS])  # fmt: skip
    parser.add_argument("--candidates", type=int, default=15)
    parser.add_argument("--size", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs-cap", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/automl-cifar"))
    args = parser.parse_args()
    space = load_space(resolve_space(Path(args.space)))
    drawn = candidates(space, args.candidates, args.seed)
    print(f"space {args.space}: baseline + {len(drawn) - 1} drawn, epochs capped at "
          f"{args.epochs_cap}, seed {args.seed}")  # fmt: skip
    scores = np.zeros((len(drawn), len(args.datasets)))
    seconds = np.zeros_like(scores)
    for d, name in enumerate(args.datasets):
        data = load(name, args)
        for c, params in enumerate(drawn):
            scores[c, d], seconds[c, d] = train(space, params, data, args)
            print(f"  {name:<11} candidate {c:>2}  val {scores[c, d]:.4f}  "
                  f"{seconds[c, d]:6.1f} s", flush=True)  # fmt: skip
    print(f"\n{'candidate':<10}" + "".join(f"{n:>12}" for n in args.datasets) + f"{'seconds':>10}")
    for c in range(len(drawn)):
        cells = "".join(f"{v:>12.4f}" for v in scores[c])
        print(f"{c:<10}{cells}{seconds[c].sum():>10.0f}")
    steps = greedy(scores, seconds, args.size)
    print("\nportfolio (mean over data sets of the best so far, each data set's best = 1)")
    for pick, score in steps:
        print(f"  + candidate {pick:>2}  {score:.4f}")
    entries = [{k: _short(v) for k, v in drawn[pick].items()} for pick, _ in steps[1:]]
    print("\n" + yaml.safe_dump({"portfolio": entries}, default_flow_style=None, sort_keys=False))


if __name__ == "__main__":
    main()
