"""Pruners by name, and when a trial stops early, on what scale its progress is compared.

Three rules, shared by every pruner:

- **Progress is a share of the trial's own schedule.** ``train.epochs`` is sampled, and
  the one-cycle and cosine schedules anneal over it, so at epoch 3 a 4-epoch trial has
  annealed while a 16-epoch trial is near its peak learning rate. Comparing them at the
  same epoch pushes the search toward short schedules for a reason unrelated to their
  final quality. So a trial reports at ``progress_step``: its epoch mapped onto a common
  grid of ``grid_steps(max_epochs)`` steps (epoch 1 of 4 is step 5 of 20, as is epoch 5 of
  20), and every trial's last epoch is the grid's last step. Pruners then compare trials
  at the same point of their schedules, and Hyperband's rungs are shares of a schedule.
  The grid has at least ``MIN_GRID`` steps: Hyperband's rungs sit at steps 1, 3 and 9, so
  a coarser grid would put its first look later in every schedule, and trials would
  train longer before the pruner first looks at them.
- **No pruning past half a schedule.** A trial past ``PRUNE_UNTIL`` of its schedule runs to
  its end (and a trial that has run its whole schedule is complete: its result and weights
  count). Stopping it there saves at most half its cost and throws away the rest, which
  is by then the best guide to its final accuracy. Without the rule, Hyperband's rung at
  step 27 of the ``photos`` space's 30-step grid stopped trials near their end, good ones
  among them. On a 20-step grid Hyperband's rungs (1, 3, 9) all sit in the first half, so
  the rule changes nothing there.
- **A trial stuck at chance stops, once it has had a fair chance.** After
  ``CHANCE_STEPS`` optimizer steps (and ``CHANCE_EPOCHS`` epochs), a validation accuracy
  still within a tenth of the way from chance to perfect means the configuration cannot
  learn this data (a receptive field too small, a learning rate far off); no bracket of
  any pruner should pay for the rest of its schedule. Steps, not epochs: an epoch of 40
  photos a class is a handful of steps, and every trial of such a search sat at chance
  after two epochs, the ones that went on to learn among them. The configurations given
  to the study (the space's baseline, a portfolio, warm starts: a trial with an
  ``origin``) are known to learn, and the rule never stops them (``exempt``).

``docs/design.md`` gives the reasons and the measurements behind each rule.

Optuna's pruners (and ``trial.report``) serve single-objective studies only, and its
multi-objective samplers cannot rank pruned trials that carry intermediate values. So in
a multi-objective study the validation-accuracy curve is kept as the trial's ``curve``
user attribute, and a percentile rule prunes on it: a trial whose accuracy at a step
falls below the given percentile of the other trials at that step stops. A low
percentile keeps alive the small, fast models that trade accuracy for latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from automl.records import TrialAttr, TrialRecord

if TYPE_CHECKING:
    from automl.data import ImageData

PERCENTILE = 25.0
STARTUP_TRIALS = 5
WARMUP_STEPS = 1
CHANCE_EPOCHS = 2  # epochs, at least, before a trial may be judged at chance
CHANCE_STEPS = 200  # optimizer steps, at least, before a trial may be judged at chance
AT_CHANCE = "is still at chance"  # how the rule's verdict reads in a pruned trial's message
MIN_GRID = 20  # steps of the progress grid, at least (see grid_steps)
CHANCE_MARGIN = 0.1  # share of the way from chance to perfect accuracy a trial must pass
PRUNE_UNTIL = 0.5  # share of a schedule after which no pruner stops a trial


class SharedHyperband(optuna.pruners.BasePruner):
    """Hyperband's brackets for pruning, every trial for the sampler.

    Optuna hands a sampler only the trials of the current trial's bracket when the study's
    pruner *is* a ``HyperbandPruner``, so TPE learns from a quarter of the study and
    samples at random until that bracket alone holds its 10 startup trials: in a short
    search most trials are then sampled at random. Which configurations are good does not
    depend on the bracket a trial was hashed to, and TPE already ranks pruned trials by how
    far they got, so the sampler sees them all; the
    brackets still decide, each on its own trials, whom to stop. Delegating instead of
    subclassing is what keeps the sampler's view whole.

    Its resource is the prunable half of the grid, not the whole: Hyperband's brackets
    follow from its maximum resource (``floor(log3(max)) + 1`` of them, the last one's only
    rung at ``3 ** (brackets - 1)``), and on the 30-step grid of the ``photos`` space the
    whole grid made a fourth bracket whose one rung, step 27, lies past the half where
    pruning stops, so its trials ran whole however bad, a large share of a short budget.
    Half the grid keeps every bracket's first rung inside the half that may be pruned; on
    grids of 20-26 steps (digits) both give the same three brackets.
    """

    def __init__(self, grid: int) -> None:
        self._hyperband = optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(1, int(PRUNE_UNTIL * grid)), reduction_factor=3
        )

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self._hyperband.prune(study, trial)


def make_pruner(name: str, grid: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return SharedHyperband(grid)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def grid_steps(max_epochs: int) -> int:
    """The steps of the progress grid for schedules of up to ``max_epochs`` epochs."""
    return max(max_epochs, MIN_GRID)


def progress_step(epoch: int, epochs: int, grid: int) -> int:
    """Epoch ``epoch`` of a ``epochs``-epoch schedule as a step of a ``grid``-step one.

    Rounded up, so the steps of one trial are distinct (``epochs <= grid``) and its last
    epoch is always step ``grid``.
    """
    grid = max(grid, epochs)
    return -(-epoch * grid // epochs)


def prunable(step: int, grid: int) -> bool:
    """Whether a pruner may stop a trial at ``step`` of the ``grid``: in the first half
    of its schedule only (never at its last epoch, which is always the grid's last step)."""
    return step <= PRUNE_UNTIL * grid


def chance_level(labels: np.ndarray, num_classes: int) -> float:
    """The accuracy of always answering the commonest class (1/classes when balanced)."""
    if labels.size == 0:
        return 1.0 / max(num_classes, 1)
    return max(
        float(np.bincount(labels, minlength=num_classes).max()) / labels.size, 1.0 / num_classes
    )


def optimizer_steps(epochs: int, train_images: int, batch_size: int) -> int:
    """The optimizer steps ``epochs`` epochs take on ``train_images`` images: as the
    training loop runs them, a batch at most the whole split, the ragged last one dropped."""
    batch = max(1, min(batch_size, train_images))
    return epochs * max(1, train_images // batch)


def fair_chance(epoch: int, steps: int) -> bool:
    """Whether a trial has trained long enough to be judged by the chance rule."""
    return epoch >= CHANCE_EPOCHS and steps >= CHANCE_STEPS


def at_chance(val_acc: float, chance: float) -> bool:
    """Within ``CHANCE_MARGIN`` of the way from ``chance`` to perfect accuracy."""
    return val_acc < chance + CHANCE_MARGIN * (1.0 - chance)


def stuck_at_chance(epoch: int, steps: int, val_acc: float, chance: float) -> bool:
    """After a fair chance (``epoch`` epochs, ``steps`` optimizer steps), still at chance."""
    return fair_chance(epoch, steps) and at_chance(val_acc, chance)


def pruned_why(val_acc: float, chance: float) -> str:
    """How a trial the pruner stopped reads: at chance, or behind the others."""
    return AT_CHANCE if at_chance(val_acc, chance) else "fell behind"


def exempt(trial: Any) -> bool:
    """A configuration given to the study rather than sampled (the space's baseline, a
    portfolio entry, a warm start): its ``origin`` says where it came from. It is known
    to learn, and it also gauges the machine and the data, so the chance rule never
    stops it."""
    return TrialRecord.of(trial).origin is not None


def batch_size(params: dict[str, Any]) -> int:
    """The batch size a trial's flat params train with."""
    from automl.training.config import TrialConfig

    return TrialConfig.from_params(params).train.batch_size


@dataclass(frozen=True)
class ChanceRule:
    """The chance rule on one data set: its chance level on the validation split, and the
    training images an epoch steps through."""

    chance: float
    train_images: int

    @classmethod
    def of(cls, data: ImageData) -> ChanceRule:
        labels = data.val.labels.numpy()
        return cls(chance_level(labels, data.num_classes), len(data.train))

    def steps(self, params: dict[str, Any], epoch: int) -> int:
        return optimizer_steps(epoch, self.train_images, batch_size(params))

    def check(self, trial: optuna.Trial, epoch: int, total: int, val_acc: float) -> None:
        """Prune ``trial`` (raise ``optuna.TrialPruned``) when it is stuck at chance after
        epoch ``epoch`` of ``total``; a given configuration goes on."""
        if epoch < CHANCE_EPOCHS or exempt(trial):
            return
        steps = self.steps(TrialRecord.of(trial).params, epoch)
        if stuck_at_chance(epoch, steps, val_acc, self.chance):
            raise optuna.TrialPruned(
                f"val_acc {val_acc:.4f} at epoch {epoch} of {total} {AT_CHANCE} "
                f"({self.chance:.2f}) after {steps} optimizer steps"
            )


def record(trial: optuna.Trial, step: int, value: float) -> None:
    curve = TrialRecord.of(trial).curve
    curve[str(step)] = value
    trial.set_user_attr(TrialAttr.CURVE, curve)


def should_prune(
    trial: optuna.Trial,
    step: int,
    value: float,
    *,
    percentile: float = PERCENTILE,
    startup_trials: int = STARTUP_TRIALS,
    warmup_steps: int = WARMUP_STEPS,
) -> bool:
    if step <= warmup_steps:
        return False
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    key = str(step)
    curves = (
        TrialRecord.of(t).curve for t in trial.study.get_trials(deepcopy=False, states=finished)
    )
    others = [curve[key] for curve in curves if key in curve]
    if len(others) < startup_trials:
        return False
    return value < float(np.percentile(others, percentile))
