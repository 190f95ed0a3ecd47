"""Defining and running a study: the settings of a search (``settings``, ``options``),
what a trial may be (``space/``), how the study decides (``strategy/``: samplers, pruners,
objectives), one trial (``trial/``), and running trials across processes and machines
(``scheduler/``). Observers of a search plug in through ``hooks``.

Concluding a search (registering, evaluating) is ``release``'s and ``insight``'s work,
strung together by ``automl.pipeline``; this package imports neither. Optuna's internals
are touched in ``automl.stores`` only; ``space/space.py`` is the only caller of
``trial.suggest_*``.
"""
