"""Systems that are models: resolving them, expanding checkpoint sweeps, and generating their outputs.

A suite's system may be ``{model: local/FOLDER}`` (a transformers folder, an alias such as
``smollm2``, or a Trainer checkpoint), ``{model: openai/NAME, base_url: ...}``, a LoRA adapter on a
local base (``{model: local/BASE, adapter: DIR}``), or ``{sweep: "runs/out/checkpoint-*"}``, which
becomes one system per checkpoint, named ``<sweep>@<step>`` and ordered by step. Everything is
checked before any model is loaded: a folder that does not exist or holds no causal LM, an adapter
for another base, a sweep glob that matches nothing.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.errors import ConfigError
from judge.eval.suite import Gate, Suite, SystemSpec, locate
from judge.generation import GenerateSettings
from judge.providers.registry import provider_info


@dataclass
class SystemModel:
    """A model under test, resolved: where it is, how it answers, and (for the training callback) the
    model already in memory."""

    name: str
    spec: str  # as written: local/... or openai/...
    provider: str  # "local" or "openai"
    path: str  # a local folder (or hub id / alias, resolved), or the server's model name
    generate: GenerateSettings
    adapter: str | None = None
    base_url: str | None = None
    step: int | None = None
    loaded: tuple[Any, Any] | None = field(default=None, repr=False)  # (model, tokenizer) given in memory

    @property
    def is_local(self) -> bool:
        return self.provider == "local"

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer) in eval mode, loaded once per process (the adapter applied on top)."""
        if self.loaded is not None:
            return self.loaded
        if not self.is_local:
            raise ConfigError(f"system '{self.name}': {self.spec} is served by a server, not loaded here")
        from judge.local.models import load_causal_lm

        return load_causal_lm(self.path, adapter=self.adapter)

    def release(self) -> None:
        """Free the loaded weights (a sweep keeps one model in memory at a time)."""
        if self.loaded is None and self.is_local:
            from judge.local.models import unload

            unload(self.path)

    def provider_instance(self) -> Any:
        """The provider that generates this system's answers (local ones in batches, keyed by content)."""
        from judge.generation import LOCAL_GENERATE_BATCH

        if self.is_local:
            from judge.providers.local import LocalProvider

            return LocalProvider(
                self.path,
                generate_batch_size=LOCAL_GENERATE_BATCH,
                content_identity=True,
                adapter=self.adapter,
                preloaded=self.loaded,
            )
        from judge.providers.registry import get_provider

        return get_provider(self.spec, base_url=self.base_url)

    def identity(self) -> dict[str, Any] | None:
        """What the model is, for cache keys: a local folder by content; a served model by its name and server,
        as judge calls are cached; None for a model given in memory (it changes as it trains)."""
        if self.loaded is not None:
            return None
        if not self.is_local:
            return {"served": self.spec, "base_url": self.base_url}
        from judge.local.models import model_fingerprint

        ident = {"fingerprint": model_fingerprint(self.path)}
        if self.adapter:
            ident["adapter"] = model_fingerprint(self.adapter)
        return ident

    def describe(self) -> dict[str, Any]:
        """Provenance: what the model is (a hash of its files for a local folder) and how it answered."""
        out: dict[str, Any] = {"model": self.spec, "generate": self.generate.model_dump(mode="json")}
        if self.is_local and self.loaded is None:
            from judge.local.models import model_fingerprint

            out["path"] = self.path
            out["fingerprint"] = model_fingerprint(self.path)
            if self.adapter:
                out["adapter"] = self.adapter
                out["adapter_fingerprint"] = model_fingerprint(self.adapter)
        if self.base_url:
            from judge.textfmt import redact_url

            out["base_url"] = redact_url(self.base_url)
        if self.step is not None:
            out["step"] = self.step
        return out


def _local_path(raw: str, base_dir: Path, where: str) -> str:
    """A local model's folder: relative to the suite file when it exists there, else an alias / hub id."""
    from judge.local.models import check_causal_lm, resolve_model

    candidate = Path(raw).expanduser()
    if not candidate.is_absolute() and (base_dir / candidate).exists():
        candidate = base_dir / candidate
    try:
        path = resolve_model(str(candidate) if candidate.exists() else raw)
        check_causal_lm(path)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return path


def _check_adapter(adapter: str, base: str, base_dir: Path, where: str) -> str:
    from judge.local.models import adapter_mismatch

    folder = Path(adapter).expanduser()
    if not folder.is_absolute():
        folder = base_dir / folder
    problem = adapter_mismatch(str(folder), base)
    if problem:
        raise ConfigError(f"{where}: adapter {folder}: {problem}")
    return str(folder)


def resolve_system(name: str, spec: SystemSpec, suite: Suite, base_dir: Path, step: int | None = None) -> SystemModel:
    """Check and resolve one model system (nothing is loaded)."""
    assert spec.model is not None
    where = locate(suite, "systems", name.split("@")[0], "model")
    provider, _, rest = spec.model.partition("/")
    settings = GenerateSettings.merged(suite.generate, spec.generate)
    if provider_info(provider).local:
        path = _local_path(rest, base_dir, where)
        adapter = _check_adapter(spec.adapter, path, base_dir, where) if spec.adapter else None
        return SystemModel(name, spec.model, "local", path, settings, adapter=adapter, step=step)
    if settings.chat_template == "none":
        raise ConfigError(f"{where}: chat_template: none needs a local model; a server applies its own template")
    return SystemModel(name, spec.model, "openai", rest, settings, base_url=spec.base_url or suite.base_url, step=step)


_STEP = re.compile(r"(\d+)(?!.*\d)")


def checkpoint_step(folder: Path) -> int | None:
    """A checkpoint's training step: ``global_step`` of its ``trainer_state.json``, else the last number
    in its name (``checkpoint-600``)."""
    state = folder / "trainer_state.json"
    if state.is_file():
        try:
            step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
            if isinstance(step, int):
                return step
        except (OSError, json.JSONDecodeError):
            pass
    m = _STEP.search(folder.name)
    return int(m.group(1)) if m else None


@dataclass
class Sweep:
    """One ``sweep:`` system expanded: its checkpoints in step order."""

    name: str
    pattern: str
    systems: list[str]
    steps: list[int | None]
    paths: list[str]


def expand_sweeps(suite: Suite, base_dir: Path) -> tuple[Suite, dict[str, Sweep]]:
    """Replace every ``sweep:`` system by one model system per matching checkpoint folder, in step order;
    a gate on the sweep applies to each of its checkpoints. A glob that matches nothing is an error."""
    if not any(s.sweep for s in suite.systems.values()):
        return suite, {}
    systems: dict[str, SystemSpec] = {}
    sweeps: dict[str, Sweep] = {}
    for name, spec in suite.systems.items():
        if spec.sweep is None:
            systems[name] = spec
            continue
        pattern = spec.sweep if Path(spec.sweep).is_absolute() else str(base_dir / spec.sweep)
        folders = [Path(p) for p in glob.glob(pattern) if Path(p).is_dir()]
        if not folders:
            raise ConfigError(
                f"{locate(suite, 'systems', name, 'sweep')}: key 'systems.{name}.sweep': '{spec.sweep}' matches "
                "no checkpoint folder"
            )
        keyed = sorted(((checkpoint_step(f), f) for f in folders), key=lambda sf: (sf[0] is None, sf[0] or 0, sf[1]))
        sweep = Sweep(name, spec.sweep, [], [], [])
        for step, folder in keyed:
            label = f"{name}@{step if step is not None else folder.name}"
            systems[label] = SystemSpec(model=f"local/{folder}", adapter=spec.adapter, generate=spec.generate)
            sweep.systems.append(label)
            sweep.steps.append(step)
            sweep.paths.append(str(folder))
        sweeps[name] = sweep
    gates: list[Gate] = []
    for gate in suite.gates:
        if gate.system in sweeps:
            gates.extend(gate.model_copy(update={"system": s}) for s in sweeps[gate.system].systems)
        else:
            gates.append(gate)
    expanded = suite.model_copy(update={"systems": systems, "gates": gates})
    return expanded, sweeps


def resolve_models(suite: Suite, base_dir: Path, sweeps: dict[str, Sweep]) -> dict[str, SystemModel]:
    """Every model system of an expanded suite, checked (folders, adapters, settings) before any load."""
    steps = {s: step for sw in sweeps.values() for s, step in zip(sw.systems, sw.steps, strict=True)}
    return {
        name: resolve_system(name, spec, suite, base_dir, steps.get(name))
        for name, spec in suite.systems.items()
        if spec.model is not None
    }
