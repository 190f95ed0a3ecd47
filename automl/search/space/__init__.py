"""What a trial may be: search space files (``loading``), the space they make (``space``,
the only caller of ``trial.suggest_*``), how each parameter is drawn (``specs``), the
spaces that ship with automl (``bundled``), and warm starts from an earlier study."""

from automl.search.space.bundled import BUNDLED_SPACES, DEFAULT_SPACE, bundled_spaces, resolve_space
from automl.search.space.loading import load_space, longest_schedule, parse_space
from automl.search.space.space import ParamDef, SearchSpace

__all__ = [
    "BUNDLED_SPACES",
    "DEFAULT_SPACE",
    "ParamDef",
    "SearchSpace",
    "bundled_spaces",
    "load_space",
    "longest_schedule",
    "parse_space",
    "resolve_space",
]
