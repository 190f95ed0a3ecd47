"""A whole search, from settings to a registered model: prepare the study, run its trials
(``automl.search``), conclude (register with ``automl.release``, evaluate with
``automl.insight``) and record the outcome on the search's run.

This is the one place that strings the layers together, so that ``search`` needs neither
``release`` nor ``insight``.
"""

from automl.pipeline.outcome import Conclusion, SearchOutcome
from automl.pipeline.run import Interrupted, finish_study, run_search

__all__ = ["Conclusion", "Interrupted", "SearchOutcome", "finish_study", "run_search"]
