"""The report's sections: each reads the records it needs and fills its placeholders,
tables and figures (a `Filled`) for template.md. No training code is imported."""
from .common import Filled, RECIPES, data_phrase  # noqa: F401
from .studies import budget_transfer, effect_phrase, failures, methods, pooled_spread, rebased, slug, sweep, tally  # noqa: F401
from .models import COURSEWORK_REPORTED_TEST, fast, finals, gpu, tuned_at_coursework_budget  # noqa: F401
from .search import optuna_search  # noqa: F401
from .cost import engine, study_cost  # noqa: F401
from .coursework import coursework, transfer  # noqa: F401
from .settings import learning_rate_curve, pilot, without_batch_norm  # noqa: F401
