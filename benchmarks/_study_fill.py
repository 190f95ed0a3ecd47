"""Synthetic trials for the scale benchmarks (``fleet.py``, ``sampler_cost.py``): the
``photos`` space's parameters, an accuracy that depends on them, a learning curve on the
progress grid, and a study filled with many finished trials by bulk insert into Optuna's
own tables.

The parameters are drawn from the distributions ``SearchSpace.sample`` gives a trial (a
few real draws per stage count serve as templates, each value then drawn again from its
own distribution: the space draws every parameter independently), so a filled study holds
what a real one would: the same names, distributions, attributes and reports. Nothing
here trains; the accuracy is a smooth function of the parameters plus noise, so a sampler
has something to learn.

Scripts run as ``python benchmarks/NAME.py`` import this as a sibling module.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages._rdb import models
from optuna.trial import TrialState

from automl.records import Ticket, TrialAttr
from automl.records.trial import SHARED
from automl.search.space import SearchSpace, load_space
from automl.search.space.bundled import resolve_space
from automl.search.strategy.pruners import grid_steps, progress_step

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
GRID = grid_steps(30)  # the photos space's longest schedule: its progress grid


def photos_space() -> SearchSpace:
    return load_space(resolve_space(Path("photos")))


@dataclass(frozen=True)
class Template:
    """What one real draw of the space looked like: its distributions, and the fixed
    values the space adds (kernel size, batch norm ...)."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any]


def templates(space: SearchSpace, count: int = 40, seed: int = 0) -> list[Template]:
    """``count`` real draws of ``space`` by the random sampler, kept as templates."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found = []
    for _ in range(count):
        trial = study.ask()
        params = space.sample(trial)
        fixed = {k: v for k, v in params.items() if k not in trial.distributions}
        found.append(Template(dict(trial.distributions), fixed))
        study.tell(trial, 0.0)
    return found


def draw(distribution: BaseDistribution, rng: random.Random) -> Any:
    """A value of ``distribution``, drawn as the random sampler would (external form)."""
    if isinstance(distribution, CategoricalDistribution):
        return rng.choice(distribution.choices)
    if isinstance(distribution, IntDistribution):
        if distribution.log:
            low, high = math.log(distribution.low), math.log(distribution.high + 1)
            return min(distribution.high, int(math.exp(rng.uniform(low, high))))
        return rng.randrange(distribution.low, distribution.high + 1, distribution.step)
    if isinstance(distribution, FloatDistribution):
        if distribution.log:
            return math.exp(rng.uniform(math.log(distribution.low), math.log(distribution.high)))
        return rng.uniform(distribution.low, distribution.high)
    raise TypeError(f"no draw for {distribution!r}")


def accuracy(params: dict[str, Any], rng: random.Random) -> float:
    """A final validation accuracy with an optimum inside the space (learning rate near
    3e-3, longer schedules, moderate augmentation and smoothing), plus noise."""
    lr = math.log10(float(params.get("optim.lr", 3e-3)) / 3e-3)
    epochs = float(params.get("train.epochs", 20)) / 30
    strength = float(params.get("aug.strength", 0.3)) - 0.35
    smoothing = float(params.get("train.label_smoothing", 0.1)) - 0.1
    score = 0.9 - 0.25 * lr**2 + 0.05 * epochs - 0.3 * strength**2 - 0.5 * smoothing**2
    return max(0.1, min(0.99, score + rng.gauss(0, 0.01)))


def curve(final: float, epochs: int, rng: random.Random) -> list[tuple[int, float]]:
    """``(progress step, val_acc)`` for each epoch of an ``epochs``-epoch schedule, as a
    trial reports them (``strategy.pruners.progress_step`` on the photos grid)."""
    points = []
    for epoch in range(1, epochs + 1):
        value = 0.1 + (final - 0.1) * (1 - math.exp(-4 * epoch / epochs))
        points.append((progress_step(epoch, epochs, GRID), value + rng.gauss(0, 0.005)))
    return points


@dataclass
class SyntheticTrial:
    """One finished trial to insert: params (external form), distributions, reports,
    attributes, state and value."""

    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    reports: list[tuple[int, float]]
    user_attrs: dict[str, Any]
    state: TrialState
    value: float | None


def synthetic_trial(
    number: int, kinds: list[Template], rng: random.Random, *, running: bool = False
) -> SyntheticTrial:
    """A finished trial as a search of the photos space leaves it: most pruned early (as
    Hyperband does, in the first half of the schedule), the rest complete; ``running``: a
    trial some epochs into its schedule, as another worker's looks."""
    template = rng.choice(kinds)
    params = {name: draw(d, rng) for name, d in template.distributions.items()}
    final = accuracy(params, rng)
    epochs = int(params.get("train.epochs", 20))
    points = curve(final, epochs, rng)
    pruned = not running and rng.random() < 0.6
    if pruned or running:
        points = points[: rng.randint(1, max(1, epochs // 2))]
    user_attrs = {
        TrialAttr.RUN_ID: f"{number:032x}",
        TrialAttr.PARAMS: {**template.fixed, **params},
        TrialAttr.SEED: 0,
        TrialAttr.WORKER: f"gpu-{number % 1000}:1",
        TrialAttr.TICKET: Ticket.NEW,
        TrialAttr.OWNER: SHARED,
    }
    if running:
        state, value = TrialState.RUNNING, None
    else:
        user_attrs[TrialAttr.REASON] = "pruned" if pruned else "complete"
        state = TrialState.PRUNED if pruned else TrialState.COMPLETE
        value = None if pruned else points[-1][1]
    return SyntheticTrial(params, dict(template.distributions), points, user_attrs, state, value)


def _rows(trial_id: int, number: int, study_id: int, trial: SyntheticTrial, start: datetime):
    """The rows of one trial, table by table."""
    yield models.TrialModel, {
        "trial_id": trial_id, "number": number, "study_id": study_id, "state": trial.state,
        "datetime_start": start, "datetime_complete": None if trial.state == TrialState.RUNNING
        else start + timedelta(minutes=5),
    }  # fmt: skip
    for name, value in trial.params.items():
        distribution = trial.distributions[name]
        yield models.TrialParamModel, {
            "trial_id": trial_id, "param_name": name,
            "param_value": distribution.to_internal_repr(value),
            "distribution_json": distribution_to_json(distribution),
        }  # fmt: skip
    kind = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    for step, value in trial.reports:
        yield models.TrialIntermediateValueModel, {
            "trial_id": trial_id, "step": step, "intermediate_value": value,
            "intermediate_value_type": kind,
        }  # fmt: skip
    for key, value in trial.user_attrs.items():
        yield models.TrialUserAttributeModel, {
            "trial_id": trial_id, "key": key, "value_json": json.dumps(value),
        }  # fmt: skip
    if trial.value is not None:
        finite = models.TrialValueModel.TrialValueType.FINITE
        yield models.TrialValueModel, {
            "trial_id": trial_id, "objective": 0, "value": trial.value, "value_type": finite,
        }  # fmt: skip


def fill(
    url: str, study_name: str, count: int, *, seed: int = 0, chunk: int = 2000,
    running: bool = False,
) -> int:  # fmt: skip
    """Append ``count`` finished synthetic trials to the existing study ``study_name`` at
    ``url``, by bulk insert (one transaction a chunk); returns the study's trial count.
    ``running``: trials left RUNNING instead, as other workers' trials (no heartbeat).

    Trials get the next free ids and numbers; on PostgreSQL the id sequence is moved past
    them, so trials Optuna creates afterwards do not collide."""
    kinds = templates(photos_space(), seed=seed)
    rng = random.Random(seed * 1_000_003 + count)
    engine = sqlalchemy.create_engine(url)
    trials = models.TrialModel.__table__
    try:
        with engine.begin() as conn:
            study_id = conn.execute(
                sqlalchemy.select(models.StudyModel.study_id).where(
                    models.StudyModel.study_name == study_name
                )
            ).scalar_one()
            highest = sqlalchemy.select(sqlalchemy.func.max(trials.c.trial_id)).scalar_subquery()
            first_id = conn.execute(sqlalchemy.select(sqlalchemy.func.coalesce(highest, 0)))
            first_id = first_id.scalar_one() + 1
            first_number = conn.execute(
                sqlalchemy.select(sqlalchemy.func.count())
                .select_from(trials)
                .where(trials.c.study_id == study_id)
            ).scalar_one()
        start = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)
        for offset in range(0, count, chunk):
            tables: dict[Any, list[dict[str, Any]]] = {}
            for i in range(offset, min(count, offset + chunk)):
                number = first_number + i
                made = synthetic_trial(number, kinds, rng, running=running)
                moment = start + timedelta(seconds=number)
                for model, row in _rows(first_id + i, number, study_id, made, moment):
                    tables.setdefault(model, []).append(row)
            with engine.begin() as conn:
                for model, rows in tables.items():  # trials first: the others refer to them
                    conn.execute(sqlalchemy.insert(model), rows)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(
                    sqlalchemy.text(
                        "select setval(pg_get_serial_sequence('trials', 'trial_id'), "
                        "(select max(trial_id) from trials))"
                    )
                )
        return first_number + count
    finally:
        engine.dispose()


def admin(sql: str) -> None:
    """A statement on the PostgreSQL server outside any study database."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)
