"""judge: LLM-as-judge evaluation you can trust.

Score outputs with rubric-driven judge calls (OpenAI-compatible servers, local transformers
models, or a scripted fake), get pydantic verdicts that are never silently 0, and validate the
judge against human labels with the ``calibration`` package.

    >>> from judge import score
    >>> results = score([{"input": "2+2?", "output": "4"}], rubric="factuality", judge="fake/echo-score", cache=False)
    >>> results[0].status
    'ok'
"""

from judge.config import GenerateConfig
from judge.dataset import Item, load_items
from judge.errors import (
    ConfigError,
    DataError,
    JudgeError,
    ProviderError,
    RubricError,
    VerdictParseError,
)
from judge.grader import Grader
from judge.providers import ModelOutput, Provider, default_judge, get_provider
from judge.rubric import Rubric, RubricSpec, list_rubrics, load_rubric
from judge.runner import Results, Summary, ascore, build_grader, run_items, score
from judge.verdict import Verdict


def evaluate(suite, **kw):
    """Run a ``judge eval`` suite (file, dict or Suite); see :func:`judge.eval.run.evaluate`."""
    from judge.eval.run import evaluate as _evaluate

    return _evaluate(suite, **kw)


def estimate_loss(model, tokenizer, texts, **kw):
    """A model's own loss on texts (or answers after prompts); see :func:`judge.metrics.modelown.estimate_loss`."""
    from judge.metrics.modelown import estimate_loss as _estimate_loss

    return _estimate_loss(model, tokenizer, texts, **kw)


# ``judge.report(...)`` builds an HTML report (the package is callable; see judge/report/__init__.py)
from judge import report  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "GenerateConfig",
    "Grader",
    "Item",
    "JudgeError",
    "ModelOutput",
    "Provider",
    "ProviderError",
    "Results",
    "Rubric",
    "RubricError",
    "RubricSpec",
    "Summary",
    "Verdict",
    "VerdictParseError",
    "ascore",
    "build_grader",
    "default_judge",
    "estimate_loss",
    "evaluate",
    "get_provider",
    "list_rubrics",
    "load_items",
    "load_rubric",
    "report",
    "run_items",
    "score",
]
