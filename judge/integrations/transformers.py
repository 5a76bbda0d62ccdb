"""A ``transformers`` ``TrainerCallback`` that runs a suite's model metrics while a model trains.

    from judge.integrations.transformers import JudgeCallback

    callback = JudgeCallback("suite.yaml", out="runs/judge")
    trainer = Trainer(model=model, args=args, ..., callbacks=[callback])
    callback.bind(trainer)   # optional: log through trainer.log (TensorBoard, W&B, MLflow receive it)
    trainer.train()

At every ``every_n_evals``-th evaluation it computes the suite's metrics that need the model itself
(``loss`` on the suite's items, ``choice_accuracy`` benchmarks) on the model in memory -- no reload,
``model.eval()`` and ``torch.no_grad()``, train mode restored after -- logs them as ``judge/<figure>``
(with ``judge/<figure>_ci_low`` / ``_ci_high``), and at the end of training writes every evaluation's
values to ``out/judge_history.json``. ``transformers`` is imported when ``JudgeCallback`` is first looked
up (the class subclasses its ``TrainerCallback``), not when this module or ``judge`` is imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from judge.eval.suite import Suite, SystemSpec, load_suite, validate_suite
from judge.generation import GenerateSettings


def _suite(suite: str | Path | dict[str, Any] | Suite, base_dir: str | Path | None) -> tuple[Suite, Path]:
    if isinstance(suite, Suite):
        return suite, Path(base_dir or ".")
    if isinstance(suite, dict):
        return validate_suite(suite), Path(base_dir or ".")
    loaded, root = load_suite(suite)
    return loaded, Path(base_dir) if base_dir is not None else root


def evaluate_model(
    model: Any, tokenizer: Any, suite: str | Path | dict[str, Any] | Suite, *, base_dir: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """The suite's model metrics for one model in memory: ``{figure: {value, ci_low, ci_high, n, ...}}``."""
    import torch

    from judge.eval.models import SystemModel
    from judge.eval.run import load_data, plan
    from judge.eval.stats import Resampling, system_value
    from judge.metrics import get_metric

    spec, root = _suite(suite, base_dir)
    metrics = [m for m in spec.metrics if m.metric is not None and get_metric(m.metric).needs_model]
    one = spec.model_copy(
        update={"systems": {"model": SystemSpec(model="local/in-memory")}, "metrics": metrics, "gates": []}
    )
    data = load_data(one, root)
    settings = GenerateSettings.merged(spec.generate)
    data.models = {"model": SystemModel("model", "in-memory", "local", "", settings, loaded=(model, tokenizer))}
    planned = plan(one, data, root)
    rs = Resampling(n_boot=spec.bootstrap, n_perm=spec.permutations, seed=spec.seed, ci=spec.ci)
    out: dict[str, dict[str, Any]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for p in planned:
                assert p.spec is not None
                res = p.spec.fn(data.view("model"), dict(p.entry.options))
                for fig in p.figures:
                    out[fig.name] = system_value(res.scores[fig.name], res.corpus.get(fig.name), rs)
                    if fig.name == "loss" and "train_loss" in res.details:
                        out["train_loss"] = {"value": res.details["train_loss"]}
    finally:
        if was_training:
            model.train()
    return out


class _JudgeCallbackBase:
    """Runs a suite's model metrics on the model being trained at each evaluation (see the module); the
    ``TrainerCallback`` behaviour comes from :data:`JudgeCallback`, which mixes this in."""

    def __init__(
        self,
        suite: str | Path | dict[str, Any] | Suite,
        *,
        every_n_evals: int = 1,
        out: str | Path | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        self.suite, self.base_dir = _suite(suite, base_dir)
        self.every_n_evals = max(1, every_n_evals)
        self.out = Path(out) if out is not None else None
        self.history: list[dict[str, Any]] = []
        self.trainer: Any = None
        self._evals = 0

    def bind(self, trainer: Any) -> _JudgeCallbackBase:
        """Log through ``trainer.log`` (so every reporting integration receives the figures)."""
        self.trainer = trainer
        return self

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._evals += 1
        if (self._evals - 1) % self.every_n_evals:
            return
        tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        if model is None or tokenizer is None:
            raise ValueError("JudgeCallback needs the Trainer's model and its tokenizer (processing_class)")
        values = evaluate_model(model, tokenizer, self.suite, base_dir=self.base_dir)
        logs: dict[str, float] = {}
        for name, v in values.items():
            if v.get("value") is None:
                continue
            logs[f"judge/{name}"] = float(v["value"])
            for bound in ("ci_low", "ci_high"):
                if v.get(bound) is not None:
                    logs[f"judge/{name}_{bound}"] = float(v[bound])
        self.history.append({"step": state.global_step, "epoch": state.epoch, "values": values})
        if self.trainer is not None:
            self.trainer.log(logs)
        else:
            state.log_history.append({**logs, "step": state.global_step})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.out is None:
            return
        from judge.io import atomic_write_text

        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "judge_history.json", json.dumps(self.history, indent=2, default=float) + "\n")


_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    """``JudgeCallback``: this module's callback as a ``transformers.TrainerCallback``, built on first use."""
    global _CLASS
    if name != "JudgeCallback":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _CLASS is None:
        from transformers import TrainerCallback

        _CLASS = type("JudgeCallback", (_JudgeCallbackBase, TrainerCallback), {"__module__": __name__})
    return _CLASS
