"""Samplers by name, with their seeds: what the study tries next."""

from __future__ import annotations

import warnings

import optuna


def make_sampler(name: str, seed: int, *, parallel: bool = True) -> optuna.samplers.BaseSampler:
    """``parallel``: other processes may run trials at the same time. TPE then treats their
    running trials as bad (the constant liar) so that workers spread out; that reads every
    unfinished trial, queued tickets included, at each suggestion, which a lone process
    need not pay."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "cmaes":  # CMA-ES handles numbers; categorical choices go to TPE
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                independent_sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=parallel),
                warn_independent_sampling=False,
            )
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        # Conditional parameters (per-stage widths, SGD momentum) need the group option.
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=parallel
        )
