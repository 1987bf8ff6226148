"""The report's sections: each reads the records it needs and fills its placeholders,
tables and figures (a `Filled`) for template.md. No training code is imported."""
from .common import Filled, RECIPES, data_mark, data_phrase  # noqa: F401
from .studies import _what_changes, basic, cheap_budget_agreement, methods, sweep  # noqa: F401
from .models import COURSEWORK_REPORTED_TEST, deep, fast, fast_budget, gpu, improved, tuned_at_coursework_budget  # noqa: F401
from .search import COURSEWORK_QUESTIONS, coursework_answers, optuna_search  # noqa: F401
from .cost import STUDY_GOAL_HOURS, cost, engine  # noqa: F401
