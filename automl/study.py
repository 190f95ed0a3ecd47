"""Building Optuna studies: samplers and pruners by name, with their seeds and limits."""

from __future__ import annotations

import warnings

import optuna

from automl.config import SearchSettings


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "cmaes":  # CMA-ES handles numbers; categorical choices go to TPE
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                independent_sampler=optuna.samplers.TPESampler(seed=seed),
                warn_independent_sampling=False,
            )
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        # Conditional parameters (per-stage widths, SGD momentum) need the group option.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(
    settings: SearchSettings,
    storage: optuna.storages.BaseStorage,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    return optuna.create_study(
        study_name=settings.study,
        storage=storage,
        sampler=make_sampler(settings.sampler, settings.seed),
        pruner=pruner or make_pruner(settings.pruner, settings.max_epochs),
        direction="maximize",
        load_if_exists=True,
    )
