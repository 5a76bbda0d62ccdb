"""``judge eval``: every metric of a suite over every system's outputs, then values, deltas, gates, review.

The run is checked whole before anything is computed (the suite, the data, every system's ids, every
metric and gate name), so a mistake costs no model call and leaves nothing in the output folder.
Results are written at the end, each file atomically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from judge.dataset import Item, id_text
from judge.errors import ConfigError, DataError, RubricError
from judge.eval.labels import apply_labels, load_eval_labels
from judge.eval.suite import Gate, MetricEntry, Suite, load_suite, locate, validate_suite
from judge.io import Row, atomic_write_text, json_safe, package_versions, read_rows, write_jsonl
from judge.metrics import get_metric
from judge.metrics.base import Corpus, EvalInput, Figure, MetricResult, MetricSpec
from judge.progress import progress_bar, reporting_to
from judge.rubric import Rubric, load_rubric

if TYPE_CHECKING:
    from judge.batch import BatchSettings
    from judge.eval.stats import Resampling

# ------------------------------------------------------------------------------------------------ data


@dataclass
class EvalData:
    """The items and every system's outputs, aligned by item order."""

    ids: list[str]
    inputs: list[str]
    references: list[list[str] | None]
    contexts: list[str | None]
    outputs: dict[str, list[str | None]]
    files: dict[str, str]  # role -> path, for provenance hashes
    groups: list[str] | None = None  # each item's value of the suite's group column (cluster bootstrap)
    models: dict[str, Any] = field(default_factory=dict)  # system -> SystemModel, for systems that are models
    generation_errors: dict[str, list[str | None]] = field(default_factory=dict)  # system -> per item
    generation_batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # system -> its BatchReport (--batch)
    train: tuple[list[str], list[str]] | None = None  # the suite's training split: inputs, first references

    def view(self, system: str) -> EvalInput:
        # None (no output: the generation failed) stays None, unscored; "" is an answer, and is scored
        return EvalInput(
            self.ids,
            list(self.outputs[system]),
            self.inputs,
            self.references,
            self.contexts,
            model=self.models.get(system),
            train=self.train,
        )


def _text(row: Row, key: str, value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return str(value)
    raise row.error(f"expected text, got {type(value).__name__}", key)


def _first(refs: list[str] | None) -> str | None:
    """An item's first reference, or None when it has none."""
    return refs[0] if refs else None


def _references(row: Row) -> list[str] | None:
    value = row.data.get("reference")
    if isinstance(value, list):
        refs = [_text(row, "reference", v) for v in value]
        if any(r is None for r in refs):
            raise row.error("a reference list holds an empty entry", "reference")
        return [r for r in refs if r is not None and r.strip()] or None
    text = _text(row, "reference", value)
    return [text] if text is not None and text.strip() else None


def _row_id(row: Row, column: str) -> str:
    value = row.data.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise row.error(f"missing '{column}': every row needs an id to pair the systems' outputs", column)
    return id_text(value)  # 3.0 from a spreadsheet means item 3


def _list_ids(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _group_of(row: Row, column: str) -> str:
    value = row.data.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise row.error(f"missing '{column}', the suite's group column: every item needs a group", column)
    return id_text(value)


def _train_split(path: Path) -> tuple[list[str], list[str]]:
    """The training split's inputs and first references (every row needs both)."""
    rows = read_rows(path)
    if not rows:
        raise DataError("no items in the training split", path=path)
    inputs, refs = [], []
    for row in rows:
        text = _text(row, "input", row.data.get("input"))
        ref = _references(row)
        if not text:
            raise row.error("a training item needs an 'input'", "input")
        if not ref:
            raise row.error("a training item needs a 'reference'", "reference")
        inputs.append(text)
        refs.append(ref[0])
    return inputs, refs


def load_data(suite: Suite, base_dir: Path) -> EvalData:
    """Read the items and the systems' outputs; any mismatch is a :class:`DataError` naming file and line."""
    data_path = base_dir / suite.data
    rows = read_rows(data_path)
    if not rows:
        raise DataError("no items in file", path=data_path)
    ids: list[str] = []
    seen: dict[str, int] = {}
    for row in rows:
        ident = _row_id(row, "id")
        if ident in seen:
            raise row.error(f"duplicate id '{ident}' (first at line {seen[ident]})", "id")
        seen[ident] = row.line
        ids.append(ident)
    data = EvalData(
        ids=ids,
        inputs=[_text(r, "input", r.data.get("input")) or "" for r in rows],
        references=[_references(r) for r in rows],
        contexts=[_text(r, "context", r.data.get("context")) for r in rows],
        outputs={},
        files={"data": str(data_path)},
    )
    if suite.group is not None:
        data.groups = [_group_of(r, suite.group) for r in rows]
    if suite.train is not None:
        data.train = _train_split(base_dir / suite.train)
        data.files["train"] = str(base_dir / suite.train)
    for name, spec in suite.systems.items():
        if spec.model is not None:  # generated later, if a metric reads outputs
            data.outputs[name] = [None] * len(ids)
            continue
        if spec.file is None:  # a column of the data file
            if not any(spec.column in r.data for r in rows):
                raise DataError(
                    f"system '{name}': the data file has no column '{spec.column}'", path=data_path, field=spec.column
                )
            data.outputs[name] = [_text(r, spec.column, r.data.get(spec.column)) for r in rows]
            continue
        path = base_dir / spec.file
        data.files[f"system:{name}"] = str(path)
        sys_rows = read_rows(path)
        if not sys_rows:
            raise DataError(f"system '{name}': the outputs file is empty", path=path)
        by_id: dict[str, str | None] = {}
        for row in sys_rows:
            ident = _row_id(row, spec.id_column)
            if ident in by_id:
                raise row.error(f"system '{name}': duplicate id '{ident}'", spec.id_column)
            if spec.column not in row.data:
                raise row.error(f"system '{name}': no '{spec.column}' column", spec.column)
            by_id[ident] = _text(row, spec.column, row.data.get(spec.column))
        missing = [i for i in ids if i not in by_id]
        extra = [i for i in by_id if i not in seen]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} item id(s) have no output: {_list_ids(missing)}")
            if extra:
                parts.append(f"{len(extra)} id(s) are not items of {suite.data}: {_list_ids(extra)}")
            raise DataError(f"system '{name}': ids do not match the items; " + "; ".join(parts), path=path)
        data.outputs[name] = [by_id[i] for i in ids]
    return data


# --------------------------------------------------------------------------------------------- metrics


@dataclass
class Planned:
    """One metric of the suite, resolved: a registered metric, or a rubric with its judge settings."""

    entry: MetricEntry
    index: int
    figures: tuple[Figure, ...]
    spec: MetricSpec | None = None
    rubric: Rubric | None = None

    @property
    def label(self) -> str:
        return self.entry.metric or self.entry.name or (self.rubric.id if self.rubric else "?")


def _rubric_figure(entry: MetricEntry, rubric: Rubric) -> Figure:
    spec = rubric.spec
    if spec.kind_info.compares_pair:
        raise ConfigError(f"rubric '{rubric.id}' is pairwise; judge eval scores each system's outputs on their own")
    direction = entry.direction or getattr(spec, "direction", None) or "higher"
    lo, hi = spec.kind_info.score_range(spec)
    return Figure(entry.name or rubric.id, direction, lo, hi, spec.description)


def _plan_model_metric(suite: Suite, data: EvalData, base_dir: Path, entry: MetricEntry, i: int) -> MetricEntry:
    """Check a metric that needs each system's own model; resolve a benchmark's data path and load it
    (a malformed row is an error now, before any model is loaded)."""
    where = locate(suite, "metrics", i)
    for name in suite.systems:
        sm = data.models.get(name)
        if sm is None:
            raise ConfigError(
                f"{where}: key 'metrics.{i}': metric '{entry.metric}' needs each system's own model, and system "
                f"'{name}' is a file of outputs (give it as model: local/FOLDER, or drop the metric)"
            )
        if not sm.is_local:
            from judge.metrics.modelown import check_served_logprobs

            try:
                check_served_logprobs(sm)
            except ConfigError as exc:
                raise ConfigError(
                    f"{where}: key 'metrics.{i}': metric '{entry.metric}' needs the log-probabilities of given "
                    f"text (prompt logprobs); system '{name}' ({sm.spec}): {exc}"
                ) from None
    if entry.metric != "choice_accuracy":
        return entry
    from judge.metrics.modelown import benchmark_questions

    options = dict(entry.options)
    raw = options.get("data")
    if isinstance(raw, str) and raw and not Path(raw).is_absolute():
        options["data"] = str(base_dir / raw)
    try:
        benchmark_questions(options)
    except (ConfigError, DataError) as exc:
        raise ConfigError(f"{where}: key 'metrics.{i}.data': {exc}") from None
    return entry.model_copy(update={"options": options})


def plan(suite: Suite, data: EvalData, base_dir: Path) -> list[Planned]:
    """Resolve every metric and check every gate, before anything is computed."""
    planned: list[Planned] = []
    owner: dict[str, int] = {}
    has_refs = any(r is not None for r in data.references)
    for i, entry in enumerate(suite.metrics):
        where = locate(suite, "metrics", i)
        if entry.metric is not None:
            try:
                spec = get_metric(entry.metric)
            except ConfigError as exc:
                raise ConfigError(f"{where}: key 'metrics.{i}': {exc}") from None
            unknown = sorted(set(entry.options) - set(spec.options))
            if unknown:
                accepted = ", ".join(spec.options) or "none"
                raise ConfigError(
                    f"{where}: key 'metrics.{i}.{unknown[0]}': metric '{spec.name}' has no option "
                    f"{', '.join(map(repr, unknown))} (it accepts: {accepted})"
                )
            if spec.needs_reference and not has_refs:
                raise ConfigError(
                    f"{where}: key 'metrics.{i}': metric '{spec.name}' needs references, and no item of "
                    f"{suite.data} has a 'reference'"
                )
            if spec.needs_model:
                entry = _plan_model_metric(suite, data, base_dir, entry, i)
            figures = spec.figures_for(entry.options) if spec.figures_for else spec.figures
            p = Planned(entry, i, figures, spec=spec)
        else:
            assert entry.rubric is not None
            candidate = base_dir / entry.rubric
            try:
                rubric = load_rubric(candidate if candidate.is_file() else entry.rubric)
            except (RubricError, ConfigError) as exc:
                raise ConfigError(f"{where}: key 'metrics.{i}.rubric': {exc}") from None
            if entry.strict is not None:
                if not rubric.kind_info.counts_flags:
                    raise ConfigError(
                        f"{where}: key 'metrics.{i}.strict': rubric '{rubric.id}' is not an opinions rubric"
                    )
                strict_spec = rubric.spec.model_copy(update={"strict": entry.strict})
                rubric = Rubric(
                    strict_spec, rubric.body, source=rubric.source, text=rubric.text, body_line=rubric.body_line
                )
            problems = rubric.validate()
            if problems:
                raise ConfigError(f"{where}: rubric '{rubric.id}': {'; '.join(problems)}")
            p = Planned(entry, i, (_rubric_figure(entry, rubric),), rubric=rubric)
            needed = [n for n in rubric.spec.inputs.required if n not in ("output",)]
            for name in needed:
                columns: dict[str, list[Any]] = {
                    "input": data.inputs,
                    "reference": data.references,
                    "context": data.contexts,
                }
                column = columns.get(name)
                if column is None or all(v in (None, "") for v in column):
                    raise ConfigError(f"{where}: rubric '{rubric.id}' needs '{name}', which the items lack")
        for fig in p.figures:
            if fig.name in owner:
                raise ConfigError(f"{where}: two metrics report '{fig.name}' (give one a different 'name')")
            owner[fig.name] = i
        planned.append(p)
    for g, gate in enumerate(suite.gates):
        if gate.metric not in owner:
            hint = ""
            for p in planned:
                if p.label == gate.metric and len(p.figures) > 1:
                    hint = f" ('{gate.metric}' reports {', '.join(f.name for f in p.figures)}: gate on one of them)"
            raise ConfigError(
                f"{locate(suite, 'gates', g, 'metric')}: key 'gates.{g}.metric': '{gate.metric}' is not computed "
                f"by this suite{hint} (it computes: {', '.join(owner)})"
            )
    return planned


async def _rubric_results(p: Planned, suite: Suite, data: EvalData, progress: bool) -> dict[str, MetricResult]:
    from judge.runner import build_grader, run_items

    entry = p.entry
    assert p.rubric is not None
    fig = p.figures[0].name
    grader = build_grader(
        p.rubric,
        entry.judge or suite.judge,
        score_mode=entry.score_mode,
        base_url=entry.base_url or suite.base_url,
        batch=entry.batch or None,
        **entry.options,
    )
    results: dict[str, MetricResult] = {}
    try:
        for system, outputs in data.outputs.items():
            items = [
                Item(
                    id=ident,
                    input=data.inputs[k] or None,
                    output=outputs[k],  # None: no output (unscored); "" is an answer the judge judges
                    reference=_first(data.references[k]),
                    context=data.contexts[k],
                )
                for k, ident in enumerate(data.ids)
            ]
            scorable = [it for it in items if it.output is not None]
            verdicts = {
                v.id: v
                for v in await run_items(
                    grader, scorable, concurrency=suite.concurrency, progress=progress, desc=f"{p.label} {system}"
                )
            }
            scores = np.full(len(items), np.nan)
            errors: list[str | None] = []
            notes: list[dict[str, Any] | None] = []
            for k, it in enumerate(items):
                v = verdicts.get(it.id)
                if v is None:
                    errors.append("no output")
                    notes.append(None)
                    continue
                if v.status == "ok" and v.score is not None:
                    scores[k] = v.score
                errors.append(v.error if v.status != "ok" else None)
                notes.append({"reasoning": v.reasoning, "raw": v.raw})
            settings = grader.describe() | {"rubric_hash": p.rubric.content_hash}
            if p.rubric.kind_info.counts_flags:
                settings["strict"] = p.rubric.spec.strict
            results[system] = MetricResult({fig: scores}, errors, settings=settings, details={"verdicts": notes})
    finally:
        await grader.provider.aclose()
    return results


def _compute(p: Planned, suite: Suite, data: EvalData, progress: bool) -> dict[str, MetricResult]:
    if p.rubric is not None:
        from judge.runner import run_sync

        return run_sync(_rubric_results(p, suite, data, progress))
    assert p.spec is not None
    results: dict[str, MetricResult] = {}
    n = len(data.ids)
    with progress_bar(len(data.outputs) * n, p.label, progress) as bar:
        for system in data.outputs:
            bar.set_description(f"{p.label} {system}")
            with reporting_to(bar, n):
                results[system] = p.spec.fn(data.view(system), dict(p.entry.options))
    return results


# --------------------------------------------------------------------------------------------- results


@dataclass
class EvalResult:
    """Everything ``judge eval`` computed. ``to_dict()`` is the ``results.json`` contract."""

    suite: dict[str, Any]
    baseline: str
    systems: dict[str, dict[str, dict[str, Any]]]
    deltas: dict[str, dict[str, dict[str, Any]]]
    gates: list[dict[str, Any]]
    provenance: dict[str, Any]
    figures: dict[str, Figure]
    scores: list[dict[str, Any]] = field(repr=False)
    review: list[dict[str, Any]] = field(repr=False)
    details: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    sweeps: dict[str, Any] = field(default_factory=dict)  # checkpoint sweeps: steps, best checkpoints, curves

    @property
    def passed(self) -> bool:
        """True when every gate passed (and there are no gates, or only passing ones)."""
        return all(g["passed"] for g in self.gates)

    @property
    def incomplete(self) -> list[str]:
        """``system/figure`` pairs with no scored item at all: the run could not do that part of its job."""
        return [f"{s}/{m}" for s, per in self.systems.items() for m, v in per.items() if v["n"] == 0]

    @property
    def warnings(self) -> list[str]:
        """Few items (below :data:`judge.eval.stats.FEW_UNITS`), the interval method, CIs at odds with p."""
        from judge.eval.stats import small_sample_warnings

        n = int(self.provenance.get("n_items") or 0)
        return small_sample_warnings(self.systems, self.deltas, self.provenance.get("bootstrap") or {}, n)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "suite": self.suite,
                "baseline": self.baseline,
                "systems": self.systems,
                "deltas": self.deltas,
                "gates": self.gates,
                "passed": self.passed,
                "provenance": self.provenance,
                "details": self.details,
                "warnings": self.warnings,
                **({"sweeps": self.sweeps} if self.sweeps else {}),
            }
        )

    def to_pandas(self) -> Any:
        """Per-item scores, one row per (id, system, metric)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.scores, columns=["id", "system", "metric", "score", "status", "error"])

    def write(self, out_dir: str | Path) -> None:
        """results.json, scores.jsonl and review.jsonl, each written atomically."""
        out = Path(out_dir)
        atomic_write_text(out / "results.json", json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        write_jsonl(out / "scores.jsonl", (json_safe(r) for r in self.scores))
        write_jsonl(out / "review.jsonl", (json_safe(r) for r in self.review))

    def table(self) -> str:
        from judge.eval.render import render_table

        return render_table(self)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gate_rows(gate: Gate, suite: Suite, result_systems: dict, deltas: dict) -> list[dict[str, Any]]:
    rule, threshold = gate.rule, gate.threshold
    delta_rule = rule.startswith("delta")
    if gate.system is not None:
        targets = [gate.system]
    else:
        targets = [s for s in suite.systems if not (delta_rule and s == suite.baseline)]
    rows = []
    for system in targets:
        if delta_rule:
            d = deltas[system][gate.metric]
            d = d["ppi"] if gate.estimate == "ppi" else d
            key = {"delta_min": "value", "delta_max": "value", "delta_ci_low_min": "ci_low"}.get(rule, "ci_high")
            value = d[key]
        else:
            v = result_systems[system][gate.metric]
            value = (v["ppi"] if gate.estimate == "ppi" else v)["value"]
        if value is None:
            passed = False  # nothing measured cannot pass a gate
        elif rule.endswith("min"):
            passed = value >= threshold
        else:
            passed = value <= threshold
        rows.append(
            {
                "metric": gate.metric,
                "system": system,
                "rule": rule,
                **({"estimate": gate.estimate} if gate.estimate != "judge" else {}),
                "threshold": threshold,
                "value": value,
                "passed": bool(passed),
            }
        )
    return rows


def _review(
    suite: Suite,
    data: EvalData,
    figures: dict[str, Figure],
    per_item: dict[str, dict[str, np.ndarray]],
    notes: dict[tuple[str, str], list[dict[str, Any] | None]],
) -> list[dict[str, Any]]:
    n_show = suite.review
    if n_show == 0:
        return []
    assert suite.baseline is not None

    def base_record(kind: str, system: str, fig: str, k: int) -> dict[str, Any]:
        note = (notes.get((system, fig)) or [None] * len(data.ids))[k] or {}
        refs = data.references[k]
        return {
            "kind": kind,
            "system": system,
            "metric": fig,
            "id": data.ids[k],
            "score": per_item[system][fig][k],
            "input": data.inputs[k],
            "reference": refs[0] if refs and len(refs) == 1 else refs,
            "context": data.contexts[k],
            "output": data.outputs[system][k],
            "reasoning": note.get("reasoning"),
            "raw": note.get("raw"),
        }

    rows: list[dict[str, Any]] = []
    for fig_name, fig in figures.items():
        higher = fig.direction == "higher"
        for system in suite.systems:
            vals = per_item[system][fig_name]
            ok = np.flatnonzero(np.isfinite(vals))
            order = ok[np.argsort(vals[ok] if higher else -vals[ok], kind="stable")]
            rows.extend(base_record("lowest", system, fig_name, int(k)) for k in order[:n_show])
        base = per_item[suite.baseline][fig_name]
        for system in suite.systems:
            if system == suite.baseline:
                continue
            vals = per_item[system][fig_name]
            both = np.flatnonzero(np.isfinite(vals) & np.isfinite(base))
            gap = vals[both] - base[both]
            order = both[np.argsort(-np.abs(gap), kind="stable")]
            for k in order[:n_show]:
                if vals[k] == base[k]:
                    break
                rec = base_record("largest_difference", system, fig_name, int(k))
                rec["baseline"] = suite.baseline
                rec["baseline_score"] = base[k]
                rec["baseline_output"] = data.outputs[suite.baseline][k]
                rec["delta"] = vals[k] - base[k]
                rec["better"] = bool((vals[k] > base[k]) == higher)
                rows.append(rec)
    return rows


def with_limit_per_subject(suite: Suite, n: int | None) -> Suite:
    """The suite with every ``choice_accuracy`` metric limited to ``n`` questions per subject (a stratified,
    seeded subset: ``judge eval --limit-per-subject``)."""
    if n is None:
        return suite
    metrics = [
        m.model_copy(update={"options": {**m.options, "limit_per_subject": n}}) if m.metric == "choice_accuracy" else m
        for m in suite.metrics
    ]
    return suite.model_copy(update={"metrics": metrics})


def _generates(data: EvalData, planned: list[Planned]) -> bool:
    """Whether the systems that are models answer the items (they do when a metric reads outputs)."""
    return bool(data.models) and any(p.spec is None or p.spec.uses_outputs for p in planned)


def _batch_settings(suite: Suite) -> BatchSettings | None:
    """The suite's ``batch`` (``--batch``) as settings, or None."""
    from judge.batch import BatchSettings

    if suite.batch is None or suite.batch is False:
        return None
    return BatchSettings() if suite.batch is True else suite.batch


def check_batch(suite: Suite, data: EvalData, planned: list[Planned]) -> None:
    """Refuse ``batch`` (``--batch``) before any work when nothing would go through the Batch API."""
    if _batch_settings(suite) is None:
        return
    what = (
        "--batch (suite key 'batch') sends the answer generation of openai/* model systems through the Batch API"
    )
    served = [name for name, sm in data.models.items() if not sm.is_local]
    if not served:
        raise ConfigError(
            f"{what}, and this suite has none (local model systems generate here; a rubric metric batches its judge "
            "calls with its own 'batch' key)"
        )
    if not _generates(data, planned):
        raise ConfigError(f"{what}, and no metric of this suite reads outputs, so nothing is generated")


def _generate(
    suite: Suite, data: EvalData, planned: list[Planned], out_dir: Path | None, progress: bool, engine: Any
) -> None:
    """Outputs of the systems that are models, when a metric reads outputs: generated once (cached by the
    model's content, the prompt and the settings), written to ``out_dir/outputs/<system>.jsonl``. With the
    suite's ``batch``, an openai/* system's answers go through the Batch API."""
    if not _generates(data, planned):
        return
    from judge.cache import Cache
    from judge.generation import generate_on_engine, generate_outputs
    from judge.runner import run_sync

    batch = _batch_settings(suite)
    cache = Cache.in_dir()
    try:
        for name, sm in data.models.items():
            provider = sm.provider_instance()

            def reported(report: Any, name: str = name) -> None:
                data.generation_batches[name] = dataclasses.asdict(report)

            async def answer(provider: Any = provider, sm: Any = sm, bar: Any = None) -> list[dict[str, Any]]:
                try:
                    return await generate_outputs(
                        provider,
                        data.ids,
                        data.inputs,
                        sm.generate,
                        cache=cache if sm.loaded is None else None,  # a model in memory has no stable identity
                        concurrency=suite.concurrency,
                        progress=bar,
                        batch=None if sm.is_local else batch,  # a local model generates here
                        on_report=reported,
                    )
                finally:
                    await provider.aclose()  # on the loop its connections belong to

            try:
                with progress_bar(len(data.ids), f"generate {name}", progress) as bar:
                    if engine.name != "local" and sm.is_local and sm.loaded is None:  # an actor pool
                        records = generate_on_engine(
                            engine, provider, data.ids, data.inputs, sm.generate, cache=cache, progress=bar
                        )
                    else:
                        records = run_sync(answer(bar=bar if progress else None))
            finally:
                sm.release()
            data.outputs[name] = [r["output"] for r in records]
            data.generation_errors[name] = [r["error"] for r in records]
            if out_dir is not None:
                write_jsonl(Path(out_dir) / "outputs" / f"{name}.jsonl", records)
    finally:
        cache.close()


def _model_metrics(planned: list[Planned], data: EvalData, progress: bool) -> dict[int, dict[str, MetricResult]]:
    """Metrics that need each system's own model, system by system: one model in memory at a time."""
    model_planned = [p for p in planned if p.spec is not None and p.spec.needs_model]
    results: dict[int, dict[str, MetricResult]] = {p.index: {} for p in model_planned}
    if not model_planned:
        return results
    n = len(data.ids)
    with progress_bar(len(data.outputs) * len(model_planned) * n, "model metrics", progress) as bar:
        for system in data.outputs:
            for p in model_planned:
                assert p.spec is not None
                bar.set_description(f"{p.label} {system}")
                with reporting_to(bar, n):
                    results[p.index][system] = p.spec.fn(data.view(system), dict(p.entry.options))
            data.models[system].release()
    return results


def _mark_generation_errors(res: MetricResult, errors: list[str | None]) -> None:
    """Items whose output could not be generated are unscored with that reason, whatever the metric made of
    the empty text."""
    for k, err in enumerate(errors):
        if err is not None:
            for scores in res.scores.values():
                scores[k] = np.nan
            res.errors[k] = err


def _sweep_summary(
    sweeps: dict[str, Any],
    figures: dict[str, Figure],
    systems: dict[str, dict[str, dict[str, Any]]],
    deltas: dict[str, dict[str, dict[str, Any]]],
    details: dict[str, dict[str, Any]],
    gates: list[dict[str, Any]],
    benchmark_figures: set[str],
) -> dict[str, Any]:
    """Per sweep: its checkpoints by step, the best checkpoint of every figure, training against validation
    loss with the checkpoint from which validation loss rises while training loss still falls (overfitting),
    and the checkpoints whose multiple-choice accuracy fell past a gate (forgetting)."""
    out: dict[str, Any] = {}
    for name, sw in sweeps.items():
        best: dict[str, str | None] = {}
        for fig_name, fig in figures.items():
            pick: tuple[float, str] | None = None  # the earliest checkpoint wins a tie
            for s in sw.systems:
                v = systems[s][fig_name]["value"]
                if v is not None and (pick is None or (v > pick[0] if fig.direction == "higher" else v < pick[0])):
                    pick = (v, s)
            best[fig_name] = pick[1] if pick else None
        val_loss = [systems[s].get("loss", {}).get("value") for s in sw.systems]
        train_loss = [details.get(s, {}).get("loss", {}).get("train_loss") for s in sw.systems]
        overfitting = None
        for k in range(1, len(sw.systems)):
            v0, v1, t0, t1 = val_loss[k - 1], val_loss[k], train_loss[k - 1], train_loss[k]
            if None not in (v0, v1, t0, t1) and v1 > v0 and t1 < t0:  # type: ignore[operator]
                overfitting = sw.systems[k]
                break
        failed = {(g["system"], g["metric"]) for g in gates if not g["passed"]}
        forgetting = [
            {"system": s, "metric": f, "delta": deltas.get(s, {}).get(f, {}).get("value")}
            for s in sw.systems
            for f in figures
            if (s, f) in failed and f in benchmark_figures  # a broad benchmark fell past its gate
        ]
        out[name] = {
            "pattern": sw.pattern,
            "systems": sw.systems,
            "steps": sw.steps,
            "paths": sw.paths,
            "best": best,
            "val_loss": val_loss if any(v is not None for v in val_loss) else None,
            "train_loss": train_loss if any(v is not None for v in train_loss) else None,
            "overfitting_from": overfitting,
            "forgetting": forgetting,
        }
    return out


@dataclass
class _Computed:
    """Every metric's per-item scores and what came with them, per system and figure."""

    figures: dict[str, Figure] = field(default_factory=dict)
    fig_ids: dict[str, list[str]] = field(default_factory=dict)
    """Figures scored over their own units (a benchmark's questions), not the suite's items: their ids."""
    per_item: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    corpora: dict[str, dict[str, Corpus]] = field(default_factory=dict)
    errors: dict[tuple[str, str], list[str | None]] = field(default_factory=dict)
    notes: dict[tuple[str, str], list[dict[str, Any] | None]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


def _compute_all(
    planned: list[Planned],
    suite: Suite,
    data: EvalData,
    engine: Any,
    by_model: dict[int, dict[str, MetricResult]],
    progress: bool,
) -> _Computed:
    """Compute every planned metric not already computed by the model metrics (on ``engine``), and gather the
    results by system and figure."""
    from judge.engines import using

    c = _Computed(per_item={s: {} for s in suite.systems}, corpora={s: {} for s in suite.systems})
    for p in planned:
        if p.index in by_model:
            computed = by_model[p.index]
        else:
            with using(engine):
                computed = _compute(p, suite, data, progress)
            if p.spec is not None and p.spec.needs_local_model:
                from judge.metrics.modelbased import release_models

                release_models()  # its model goes before the next metric loads another
            for system, res in computed.items():
                if system in data.generation_errors:
                    _mark_generation_errors(res, data.generation_errors[system])
        for system, res in computed.items():
            for fig in p.figures:
                c.figures[fig.name] = fig
                c.per_item[system][fig.name] = np.asarray(res.scores[fig.name], dtype=float)
                if res.ids is not None:
                    c.fig_ids[fig.name] = res.ids
                if fig.name in res.corpus:
                    c.corpora[system][fig.name] = res.corpus[fig.name]
                c.errors[(system, fig.name)] = res.errors
                if "verdicts" in res.details:
                    c.notes[(system, fig.name)] = res.details["verdicts"]
            other = {k: v for k, v in res.details.items() if k != "verdicts"}
            if other:
                c.details.setdefault(system, {})[p.label] = other
        first = next(iter(computed.values()))
        c.settings[p.label] = first.settings
    return c


def _statistics(
    suite: Suite, c: _Computed, rs: Resampling, groups: np.ndarray | None
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, dict[str, Any]]]]:
    """Each system's value of every figure with its CI, and each system's paired delta against the baseline
    (clustered by ``groups``, apart from figures scored over their own units)."""
    from judge.eval.stats import paired_delta, system_value

    assert suite.baseline is not None
    systems: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in suite.systems}
    deltas: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in suite.systems if s != suite.baseline}
    for name, fig in c.figures.items():
        fig_groups = groups if name not in c.fig_ids else None
        for system in suite.systems:
            systems[system][name] = system_value(c.per_item[system][name], c.corpora[system].get(name), rs, fig_groups)
        for system in deltas:
            pair: tuple[Corpus, Corpus] | None = None
            if name in c.corpora[system] and name in c.corpora[suite.baseline]:
                pair = (c.corpora[system][name], c.corpora[suite.baseline][name])
            deltas[system][name] = paired_delta(
                c.per_item[system][name],
                c.per_item[suite.baseline][name],
                pair,
                fig.direction == "higher",
                rs,
                fig_groups,
            )
    return systems, deltas


def _score_records(suite: Suite, data: EvalData, c: _Computed) -> list[dict[str, Any]]:
    """scores.jsonl: one record per (system, figure, item), unscored ones with their reason."""
    scores = []
    for system in suite.systems:
        for name in c.figures:
            vals, errs = c.per_item[system][name], c.errors[(system, name)]
            for k, ident in enumerate(c.fig_ids.get(name, data.ids)):
                ok = bool(np.isfinite(vals[k]))
                scores.append(
                    {
                        "id": ident,
                        "system": system,
                        "metric": name,
                        "score": float(vals[k]) if ok else None,
                        "status": "ok" if ok else "unscored",
                        "error": None if ok else (errs[k] or "unscored"),
                    }
                )
    return scores


def _provenance(suite: Suite, data: EvalData, c: _Computed, rs: Resampling, n_units: int) -> dict[str, Any]:
    """When, with which metric settings, resampling, data files (hashed), package versions and models."""
    provenance = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "metrics": c.settings,
        "figures": {n: {"direction": f.direction, "range": [f.lo, f.hi]} for n, f in c.figures.items()},
        "bootstrap": {
            "resamples": rs.n_boot,
            "permutations": rs.n_perm,
            "seed": rs.seed,
            "ci": rs.method(n_units),  # for the whole set; a figure with unscored items may fall below BCA_BELOW
            "ci_requested": rs.ci,
            "level": rs.level,
            "group": suite.group,
            "n_groups": n_units if suite.group is not None else None,
        },
        "data_files": {role: {"path": path, "sha256": _sha256(path)} for role, path in data.files.items()},
        "versions": package_versions(
            "judge", "numpy", "scipy", "sacrebleu", "rouge-score", "bert-score", "torch", "transformers", "openai"
        ),
        "n_items": len(data.ids),
    }
    if data.models:
        models = {name: sm.describe() for name, sm in data.models.items()}
        for name, report in data.generation_batches.items():
            models[name]["batch"] = report  # what generating through the Batch API did
        provenance["models"] = models
    return provenance


def run_suite(
    suite: Suite,
    base_dir: Path,
    *,
    progress: bool = False,
    out_dir: str | Path | None = None,
    models_in_memory: Mapping[str, tuple[Any, Any]] | None = None,
) -> EvalResult:
    """Check everything, generate the outputs of systems that are models, compute every metric for every
    system, then the statistics, gates and review. ``models_in_memory`` gives (model, tokenizer) pairs for
    systems already loaded (the training callback)."""
    from judge.eval.models import expand_sweeps, resolve_models
    from judge.eval.stats import Resampling

    suite, sweeps = expand_sweeps(suite, base_dir)
    data = load_data(suite, base_dir)
    data.models = resolve_models(suite, base_dir, sweeps)
    for name, loaded in (models_in_memory or {}).items():
        data.models[name].loaded = loaded
    planned = plan(suite, data, base_dir)
    check_batch(suite, data, planned)
    labels = load_eval_labels(suite, base_dir, data.ids, {f.name for p in planned for f in p.figures})
    assert suite.baseline is not None
    rs = Resampling(n_boot=suite.bootstrap, n_perm=suite.permutations, seed=suite.seed, ci=suite.ci)
    groups = np.array(data.groups) if data.groups is not None else None
    n_units = len(data.ids) if data.groups is None else len(set(data.groups))

    from judge.engines import get_engine

    engine = get_engine(suite.engine, suite.address)
    _generate(suite, data, planned, Path(out_dir) if out_dir is not None else None, progress, engine)
    c = _compute_all(planned, suite, data, engine, _model_metrics(planned, data, progress), progress)
    systems, deltas = _statistics(suite, c, rs, groups)
    if labels is not None:
        apply_labels(labels, data.ids, c.per_item, systems, deltas, suite.baseline, groups)
    gates = [row for gate in suite.gates for row in _gate_rows(gate, suite, systems, deltas)]
    from judge.textfmt import redact_url_fields  # credentials in a base_url never reach results.json

    return EvalResult(
        suite=redact_url_fields(suite.model_dump(mode="json")),
        baseline=suite.baseline,
        systems=systems,
        deltas=deltas,
        gates=gates,
        provenance=_provenance(suite, data, c, rs, n_units),
        figures=c.figures,
        scores=_score_records(suite, data, c),
        review=_review(suite, data, {n: f for n, f in c.figures.items() if n not in c.fig_ids}, c.per_item, c.notes),
        details=c.details,
        sweeps=_sweep_summary(
            sweeps,
            c.figures,
            systems,
            deltas,
            c.details,
            gates,
            {f.name for p in planned if p.entry.metric == "choice_accuracy" for f in p.figures},
        ),
    )


def evaluate(
    suite: str | Path | Mapping[str, Any] | Suite,
    *,
    out: str | Path | None = None,
    base_dir: str | Path | None = None,
    progress: bool = False,
) -> EvalResult:
    """Run an evaluation suite (a YAML file, a dict, or a :class:`Suite`) and return its results.

    Paths in the suite are relative to the suite file (or ``base_dir``, default the working directory,
    for a dict). With ``out``, results.json, scores.jsonl and review.jsonl are written there.
    """
    if isinstance(suite, Suite):
        s, root = suite, Path(base_dir or ".")
    elif isinstance(suite, Mapping):
        s, root = validate_suite(dict(suite)), Path(base_dir or ".")
    else:
        s, root = load_suite(suite)
        if base_dir is not None:
            root = Path(base_dir)
    result = run_suite(s, root, progress=progress, out_dir=out)
    if out is not None:
        result.write(out)
    return result
