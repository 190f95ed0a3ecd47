"""Opening a search's study: its sampler, its pruner and its objectives' directions."""

from __future__ import annotations

import warnings

import optuna

from automl.errors import ConfigError
from automl.search.settings import SearchSettings
from automl.search.strategy.pruners import make_pruner
from automl.search.strategy.samplers import make_sampler


def open_study(
    settings: SearchSettings,
    storage: optuna.storages.BaseStorage,
    pruner: optuna.pruners.BasePruner | None = None,
    *,
    seed_offset: int = 0,
    parallel: bool = True,
) -> optuna.Study:
    """Create the study, or load it to resume; its objectives must be the ones asked for.

    ``seed_offset`` gives each parallel worker its own sampler stream, so two workers never
    draw the same configuration from the same seed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            study = optuna.create_study(
                study_name=settings.study_name,
                storage=storage,
                sampler=make_sampler(
                    settings.sampler, settings.seed + seed_offset, parallel=parallel
                ),
                pruner=pruner or make_pruner(settings.pruner, settings.progress_grid),
                directions=[optuna.study.StudyDirection[d.upper()] for d in settings.directions],
                load_if_exists=True,
            )
        except ValueError as exc:  # an existing study with other directions
            raise ConfigError(f"--study-name {settings.study_name}: {exc}") from None
    have = [d.name.lower() for d in study.directions]
    if have != settings.directions:
        names = study.metric_names or [f"objective {i}" for i in range(len(have))]
        raise ConfigError(
            f"--objective: study '{settings.study_name}' optimizes {', '.join(names)} "
            f"({', '.join(have)}); use the same objectives to resume it, or another --study-name"
        )
    if study.metric_names != list(settings.objectives):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(settings.objectives))
    return study
