"""The suite file of ``judge eval``: what to compare, with which metrics, and what must hold.

A suite is YAML (or a dict from Python), validated by :class:`Suite` with ``extra="forbid"``, so a
misspelt key is an error naming the file, line and key -- before any data is read or any model is
called. Paths in a suite file are relative to the file.

    data: items.jsonl             # id, input, optional reference (string or list) and context
    systems:
      base: base.jsonl            # a file of id, output ...
      tuned: {column: tuned}      # ... or a column of the data file
    baseline: base
    metrics:
      - exact_match
      - {metric: bertscore, num_layers: 6}
      - {rubric: factuality, judge: openai/gpt-4o-mini}
    gates:
      - {metric: exact_match, system: tuned, min: 0.6}
      - {metric: factuality, delta_ci_low_min: 0}
    group: prompt_id              # optional: items sharing a prompt resample together (cluster bootstrap)
    ci: auto                      # percentile | bca | auto (BCa below 100 items or groups)
    labels: {file: labels.csv, metric: factuality}   # optional: human labels correct the judge (judge.eval.labels)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from judge.batch import BatchSettings
from judge.config import ScoreMode
from judge.engines import EngineName
from judge.errors import ConfigError
from judge.generation import GenerateSettings
from judge.providers.registry import provider_info

GATE_RULES = ("min", "max", "delta_min", "delta_max", "delta_ci_low_min", "delta_ci_high_max")


class SystemSpec(BaseModel):
    """Where a system's outputs come from: a file of ``id``/``output`` rows, a column of the data file,
    a model that answers the items (``model: local/FOLDER`` or ``openai/NAME``), or a sweep of
    checkpoints (``sweep: "runs/out/checkpoint-*"``, one system per checkpoint)."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = None
    column: str = Field("output", description="The column holding the outputs (default: output).")
    id_column: str = Field("id", description="The column holding the item id (default: id).")
    model: str | None = Field(
        None, description="A model that answers the items: local/FOLDER (or alias), openai/NAME with base_url."
    )
    adapter: str | None = Field(None, description="A PEFT (LoRA) adapter folder applied to a local model.")
    base_url: str | None = Field(None, description="OpenAI-compatible server of an openai/* model.")
    generate: GenerateSettings | None = Field(None, description="Generation settings (override the suite's).")
    sweep: str | None = Field(None, description="A glob of checkpoint folders: one system per checkpoint.")

    @model_validator(mode="after")
    def _one_source(self) -> SystemSpec:
        given = [k for k in ("file", "model", "sweep") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"a system is a file, a model or a sweep, not {' and '.join(given)}")
        if self.model is None and self.sweep is None:
            extra = [k for k in ("adapter", "base_url", "generate") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"'{extra[0]}' is for systems that are models (model: ... or sweep: ...)")
        if self.model is not None:
            provider = self.model.partition("/")[0]
            if "/" not in self.model or provider not in ("local", "hf", "openai"):
                raise ValueError(f"model '{self.model}' must look like local/FOLDER or openai/NAME")
            if self.adapter is not None and not provider_info(provider).local:
                raise ValueError("an adapter applies to a local model (local/BASE)")
            if self.base_url is not None and "base_url" not in provider_info(provider).options:
                raise ValueError("base_url is for openai/* models")
        return self

    @property
    def is_model(self) -> bool:
        return self.model is not None


class MetricEntry(BaseModel):
    """One metric of the stack: a reference metric by name, or a rubric through a judge."""

    model_config = ConfigDict(extra="forbid")

    metric: str | None = Field(None, description="A registered metric: exact_match, bleu, rouge, bertscore ...")
    rubric: str | None = Field(None, description="A rubric name or file, scored by the judge.")
    name: str | None = Field(None, description="What to call a rubric metric in results (default: the rubric id).")
    judge: str | None = Field(None, description="Judge for a rubric, e.g. openai/gpt-4o-mini (default: the suite's).")
    score_mode: ScoreMode | None = None
    base_url: str | None = None
    direction: Literal["higher", "lower"] | None = Field(None, description="Override: is a higher score better?")
    strict: bool | None = Field(None, description="Opinions rubrics (toxicity, bias): any flagged opinion scores 1.")
    batch: bool | BatchSettings | None = Field(
        None,
        description="Rubric metrics: send the judge calls through the provider's Batch API (openai/* judges), at "
        "the batch price; true, or its settings (poll_interval, timeout, ...).",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Metric options (model, num_layers ...).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # "bleu" -> {metric: bleu}; {metric: bertscore, idf: true} -> options {idf: true}
        if isinstance(value, str):
            return {"metric": value}
        if isinstance(value, dict) and "metric" in value:
            known = {"metric", "options"}
            extra = {k: v for k, v in value.items() if k not in known}
            if extra:
                return {"metric": value["metric"], "options": {**value.get("options", {}), **extra}}
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> MetricEntry:
        if (self.metric is None) == (self.rubric is None):
            raise ValueError("give either 'metric' (a reference metric) or 'rubric' (a judge rubric)")
        return self


class Gate(BaseModel):
    """A rule checked at the end of a run; any failed gate makes ``judge eval`` exit 1."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    system: str | None = Field(None, description="Default: every system (delta rules: every non-baseline one).")
    min: float | None = None
    max: float | None = None
    delta_min: float | None = None
    delta_max: float | None = None
    delta_ci_low_min: float | None = None
    delta_ci_high_max: float | None = None
    estimate: Literal["judge", "ppi"] = Field(
        "judge", description="Which value the rule reads: the judge's, or the prediction-powered one (needs labels)."
    )

    @model_validator(mode="after")
    def _one_rule(self) -> Gate:
        given = [r for r in GATE_RULES if getattr(self, r) is not None]
        if len(given) != 1:
            raise ValueError(f"a gate has exactly one rule of {', '.join(GATE_RULES)} (got {len(given) or 'none'})")
        return self

    @property
    def rule(self) -> str:
        return next(r for r in GATE_RULES if getattr(self, r) is not None)

    @property
    def threshold(self) -> float:
        value = getattr(self, self.rule)
        assert value is not None
        return float(value)


class LabelsSpec(BaseModel):
    """Human labels of some items' outputs on one rubric metric: the judge's scores are corrected by them."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="CSV/JSONL of id, system, label (and optionally annotator).")
    metric: str = Field(description="The rubric metric the labels are on (its name in results).")
    id_column: str = "id"
    system_column: str = "system"
    label_column: str = "label"
    scale: tuple[float, float] | None = Field(None, description="[min, max]: labels outside it are an error.")
    map: Literal["identity", "isotonic"] = Field(
        "identity",
        description="isotonic: labels on another scale than the rubric's (0/1, say); each system's judge scores are "
        "mapped to it by a cross-fitted isotonic fit.",
    )


class Suite(BaseModel):
    """A validated suite."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    data: str = Field(description="Items file: id, input, optional reference and context.")
    systems: dict[str, SystemSpec]
    baseline: str | None = Field(None, description="The system every delta is measured against (default: the first).")
    metrics: list[MetricEntry] = Field(min_length=1)
    gates: list[Gate] = Field(default_factory=list)
    review: int = Field(15, ge=0, description="Lowest-scoring items listed per system and metric.")
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples for every CI.")
    permutations: int = Field(2000, ge=100, description="Approximate-randomization rounds for each p-value.")
    seed: int = 0
    ci: Literal["auto", "percentile", "bca"] = Field(
        "auto", description="CI method: percentile, BCa, or auto (BCa below 100 resampling units)."
    )
    group: str | None = Field(
        None,
        description="A data-file column whose items are not independent (several samples per prompt): "
        "the bootstrap resamples whole groups, the same groups for both systems.",
    )
    generate: GenerateSettings | None = Field(None, description="Generation settings of systems that are models.")
    train: str | None = Field(
        None,
        description="A training split (input, reference) beside 'data': the loss metric is computed on it too, "
        "so a sweep can show training against validation loss.",
    )
    judge: str | None = Field(None, description="Default judge for rubric metrics.")
    labels: LabelsSpec | None = Field(None, description="Human labels that correct a rubric metric (PPI).")
    base_url: str | None = None
    concurrency: int = Field(16, ge=1)
    batch: bool | BatchSettings | None = Field(
        None,
        description="Systems that are openai/* models: generate their answers through the provider's Batch API, at "
        "the batch price, within 24 h (needs the cache); true, or its settings (poll_interval, timeout, ...). "
        "Local model systems generate here; a rubric metric batches its judge calls with its own 'batch'.",
    )
    engine: EngineName = Field(
        "local",
        description="Where local-model work runs (perplexity, BERTScore, generation by local model systems): "
        "in this process, or a Ray actor pool.",
    )
    address: str | None = Field(None, description="Ray cluster for engine ray (ray://HEAD:10001, auto).")
    _source: str = PrivateAttr("<suite>")
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @field_validator("systems", mode="before")
    @classmethod
    def _system_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({"file": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> Suite:
        if len(self.systems) < 2:
            raise ValueError("'systems' needs at least two systems to compare")
        for name in self.systems:
            if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*", name):
                raise ValueError(f"system name '{name}' must be letters, digits, '_', '-' or '.'")
        if self.baseline is None:
            self.baseline = next(iter(self.systems))
        elif self.baseline not in self.systems:
            raise ValueError(f"baseline '{self.baseline}' is not one of the systems ({', '.join(self.systems)})")
        if self.systems[self.baseline].sweep is not None:
            raise ValueError(f"the baseline '{self.baseline}' is a sweep: name one model or file as the baseline")
        for gate in self.gates:
            if gate.system is not None and gate.system not in self.systems:
                raise ValueError(f"gate on system '{gate.system}', which is not one of ({', '.join(self.systems)})")
            if gate.system == self.baseline and gate.rule.startswith("delta"):
                raise ValueError(f"a delta gate on the baseline '{self.baseline}' compares it with itself")
            if gate.estimate == "ppi" and (self.labels is None or self.labels.metric != gate.metric):
                raise ValueError(f"a gate with estimate: ppi needs 'labels' on its metric '{gate.metric}'")
        return self


# ---------------------------------------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and sequence entry."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _key_lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _key_lines(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            _key_lines(child, (*path, i), out)


def _line_of(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    for end in range(len(loc), -1, -1):  # the deepest key we know a line for
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _where(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line is not None else source


def validate_suite(raw: Any, source: str = "<suite>", lines: dict[tuple[Any, ...], int] | None = None) -> Suite:
    """Validate a suite mapping; errors name ``source``, the line (when known) and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a suite must be a mapping of keys (data, systems, metrics ...)")
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(suite)"
            line = _line_of(lines or {}, loc)
            msg = err["msg"].removeprefix("Value error, ")
            messages.append(f"{_where(source, line)}: key '{key}': {msg}")
        raise ConfigError("invalid suite:\n  " + "\n  ".join(messages)) from None
    suite._source, suite._lines = source, dict(lines or {})
    return suite


def load_suite(path: str | Path) -> tuple[Suite, Path]:
    """Read and validate a suite file; returns the suite and the folder its paths are relative to."""
    from judge.io import YamlLimitError, load_yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: suite file not found" if not p.exists() else f"{p}: is not a file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: the suite file is not UTF-8 text") from None
    try:
        raw, node = load_yaml(text, _LineLoader)  # a SafeLoader, bounded in size, nesting and aliases
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        kind = "YAML" if isinstance(exc, YamlLimitError) else "YAML syntax error"
        raise ConfigError(f"{_where(str(p), line)}: {kind}: {problem}") from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _key_lines(node, (), lines)
    return validate_suite(raw, str(p), lines), p.parent


def locate(suite: Suite, *loc: Any) -> str:
    """``file:line`` of a key of the suite (the file's name alone when the line is unknown), for errors
    found after validation: an unknown metric, a gate on a metric the suite does not compute."""
    return _where(suite._source, _line_of(suite._lines, loc))
