"""Rubrics are data: a YAML front matter validated by :class:`RubricSpec` plus a Jinja body.

A rubric file looks like::

    ---
    id: factuality
    version: 1
    description: Is the answer factually correct?
    scale: {min: 1, max: 5, anchors: {1: "wrong", 5: "fully correct"}}
    inputs: {required: [input, output], optional: [reference]}
    ---
    {% block system %}You are a strict grader...{% endblock %}
    {% block user %}Question: {{ input }} ...{% endblock %}

Three kinds: ``single`` (a score on ``scale``), ``pairwise`` (a label from ``choices``) and
``opinions``: the judge lists the opinions the output states with a yes/no ``flag`` verdict for
each (is it toxic? biased?), and the score is the flagged fraction (0 when there are none), or 1/0
with ``strict: true``. What each kind means to the rest of the package is asked of its strategy object
(:mod:`judge.rubric_kinds`, ``rubric.kind_info``), never decided by comparing the name.

Rendering uses one sandboxed, StrictUndefined Jinja environment: a missing variable is an error
before any model call, and attribute tricks (``''.__class__``) are refused. The output-format
instructions are appended by :meth:`Rubric.render` from the scale and score mode, in one place,
so every rubric asks for verdicts the same way. Each rubric's ``content_hash`` (of the whole file)
is recorded in every verdict and in the cache key.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from judge.config import Message
from judge.errors import RubricError
from judge.io import load_yaml
from judge.rubric_kinds import OPINION_VERDICTS as OPINION_VERDICTS
from judge.rubric_kinds import RUBRIC_KINDS, RubricKind, rubric_kind

BUILTIN_DIR_CANDIDATES = (
    Path(__file__).resolve().parent.parent / "rubrics",  # a source checkout (editable install)
    Path(__file__).resolve().parent / "builtin_rubrics",  # an installed wheel (pyproject maps rubrics/ here)
)
KNOWN_INPUTS = ("input", "output", "reference", "context", "output_b", "conversation")
TEMPLATE_GLOBALS = ("scale", "choices", "flag", "strict", "score_mode")
"""What every template may read besides the item's inputs (from the front matter and the score mode)."""


class _Undefined(jinja2.StrictUndefined):
    """Strict, except that an absent value may be tested: ``{% if reference %}`` is false, while
    ``{{ reference }}`` outside such a guard is an error (it would put "None" in the prompt)."""

    # jinja2 declares StrictUndefined.__bool__ as its raising helper (returning Never): any override that
    # returns is an incompatible override to mypy, though overriding it is the point of this class
    def __bool__(self) -> bool:  # type: ignore[override]
        return False


MAX_RANGE = 10_000
"""Largest ``range()`` a template may build (Jinja's sandbox allows 100 000)."""
MAX_RENDER_CHARS = 1_000_000
"""Largest rendered prompt, in characters: far above any judge's context, far below a memory problem."""
MAX_RENDER_SECONDS = 5.0
"""Longest one render may take: a template that loops for ever is stopped, not waited for."""
MAX_RENDER_STEPS = 1_000_000
"""Most loop iterations plus calls one render may make, whether or not they print anything: a deterministic
bound on work (a million steps take well under a second), with :data:`MAX_RENDER_SECONDS` as the backstop."""
FORBIDDEN_TAGS = {jinja2.nodes.Include: "include", jinja2.nodes.Import: "import", jinja2.nodes.FromImport: "from"}
FORBIDDEN_TAGS[jinja2.nodes.Extends] = "extends"


class _RubricSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with bounds on what one render may cost: ranges, repetition, powers, output size and time.

    Jinja's sandbox stops attribute tricks but lets ``'x' * 10**9`` allocate a gigabyte and
    ``10 ** 10 ** 9`` spin for ever; here those raise ``SecurityError`` (a :class:`RubricError` to the user).
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _bounded_range

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        """The template's tree with every ``{% for %}`` iterable passed through :meth:`counted`, so each
        iteration is a render step even when the loop body prints nothing."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(jinja2.nodes.For):
            counted = jinja2.nodes.EnvironmentAttribute("counted", lineno=loop.lineno)
            loop.iter = jinja2.nodes.Call(counted, [loop.iter], [], None, None, lineno=loop.lineno)
        return tree

    def counted(self, iterable: Any) -> Any:
        for item in iterable:
            _step()
            yield item

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        _step()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise jinja2.exceptions.SecurityError(f"exponent {right} is too large (at most 64 in a rubric)")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_RENDER_CHARS:
                    raise jinja2.exceptions.SecurityError(
                        f"repeating a {type(seq).__name__} {n} times exceeds {MAX_RENDER_CHARS} items"
                    )
        return super().call_binop(context, operator, left, right)


def _bounded_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise jinja2.exceptions.SecurityError(f"range of {len(rng)} items is too large (at most {MAX_RANGE})")
    return rng


class _RenderBudget(threading.local):
    """What the render running in this thread may still do: steps left, and its deadline."""

    steps = MAX_RENDER_STEPS
    deadline = float("inf")


_BUDGET = _RenderBudget()


class _RenderLimit(Exception):
    """A render past its step or time bound (becomes a :class:`RenderLimitError` naming the template line)."""


class RenderLimitError(RubricError):
    """A render stopped at a bound on its work: steps, time or recursion depth."""


class PromptTooLongError(RenderLimitError):
    """The rendered prompt passed :data:`MAX_RENDER_CHARS` (an item's text, usually: see ``Rubric.render_item``)."""


def _step() -> None:
    _BUDGET.steps -= 1
    if _BUDGET.steps < 0:
        raise _RenderLimit(f"rendering took more than {MAX_RENDER_STEPS:,} loop steps and calls")
    if _BUDGET.steps % 1024 == 0 and time.monotonic() > _BUDGET.deadline:
        raise _RenderLimit(f"rendering took over {MAX_RENDER_SECONDS:g} s")


def _render_block(block: Any, context: Any, source: str) -> str:
    """Join a block's output, stopping once it passes the size or time bound."""
    parts: list[str] = []
    size = 0
    for chunk in block(context):
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_RENDER_CHARS:
            raise PromptTooLongError(f"the rendered prompt passes {MAX_RENDER_CHARS:,} characters", path=source)
        if time.monotonic() > _BUDGET.deadline:
            raise RenderLimitError(f"rendering took over {MAX_RENDER_SECONDS:g} s", path=source)
    return "".join(parts)


_ENV = _RubricSandbox(
    undefined=_Undefined,
    autoescape=False,
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
)


class Scale(BaseModel):
    """A numeric scale with anchor descriptions (``min`` .. ``max``, integers)."""

    model_config = ConfigDict(extra="forbid")

    min: int
    max: int
    anchors: dict[int, str] = Field(default_factory=dict, description="What a score means, for some or all points.")

    @model_validator(mode="after")
    def _check(self) -> Scale:
        if self.max <= self.min:
            raise ValueError(f"scale max ({self.max}) must be greater than min ({self.min})")
        if self.max - self.min > 100:
            raise ValueError("scale has more than 100 points")
        bad = [k for k in self.anchors if not self.min <= k <= self.max]
        if bad:
            raise ValueError(f"anchors {bad} lie outside the scale {self.min}..{self.max}")
        return self

    @property
    def points(self) -> list[int]:
        return list(range(self.min, self.max + 1))


class Inputs(BaseModel):
    """Which item fields the template reads."""

    model_config = ConfigDict(extra="forbid")

    required: list[str] = Field(default_factory=lambda: ["input", "output"])
    optional: list[str] = Field(default_factory=list)


class RubricSpec(BaseModel):
    """The validated front matter of a rubric file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    version: int | str = 1
    description: str
    kind: str = Field("single", description=f"What the judge gives: one of {', '.join(RUBRIC_KINDS)}.")
    scale: Scale | None = None
    choices: dict[str, str] | None = Field(
        None, description="Pairwise rubrics: verdict label -> meaning, e.g. A / B / tie."
    )
    flag: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_ \-]*$",
        description="Opinions rubrics: what a 'yes' verdict on one opinion means, e.g. toxic, biased.",
    )
    strict: bool = Field(
        False, description="Opinions rubrics: score 1 when any opinion is flagged, else 0 (not the fraction)."
    )
    direction: Literal["higher", "lower"] = Field(
        "higher", description="Which scores are better: 'lower' for rubrics that count faults (toxicity, bias)."
    )
    inputs: Inputs = Field(default_factory=Inputs)
    output: list[str] = Field(default_factory=lambda: ["reasoning", "score"], description="Fields of the verdict.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        rubric_kind(kind)  # the one place an unknown kind is refused, naming the accepted ones
        return kind

    @model_validator(mode="after")
    def _check(self) -> RubricSpec:
        self.kind_info.check(self)
        overlap = set(self.inputs.required) & set(self.inputs.optional)
        if overlap:
            raise ValueError(f"inputs {sorted(overlap)} are both required and optional")
        return self

    @property
    def kind_info(self) -> RubricKind:
        """The strategy for this rubric's kind (:mod:`judge.rubric_kinds`)."""
        return RUBRIC_KINDS[self.kind]


class Rubric:
    """A loaded rubric: spec, template and content hash."""

    def __init__(self, spec: RubricSpec, body: str, *, source: str, text: str, body_line: int = 1) -> None:
        self.spec = spec
        self.body = body
        self.source = source
        self.text = text
        self.body_line = body_line
        try:
            self._template = _ENV.from_string(body)
        except jinja2.TemplateSyntaxError as exc:
            raise RubricError(
                f"template syntax error: {exc.message}", path=source, line=body_line + (exc.lineno or 1) - 1
            ) from None
        for node_type, tag in FORBIDDEN_TAGS.items():
            node = next(iter(_ENV.parse(body).find_all(node_type)), None)
            if node is not None:
                raise RubricError(
                    f"{{% {tag} %}} is not allowed: a rubric is one self-contained file",
                    path=source,
                    line=body_line + node.lineno - 1,
                )
        missing_blocks = {"user"} - set(self._template.blocks)
        if missing_blocks:
            raise RubricError("template must define {% block user %} (and optionally {% block system %})", path=source)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def kind_info(self) -> RubricKind:
        """The strategy for this rubric's kind (:mod:`judge.rubric_kinds`)."""
        return self.spec.kind_info

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the whole rubric file (front matter and body), first 16 hex digits."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    @cached_property
    def variables(self) -> set[str]:
        """Names the template reads (from its source), for validation before any call."""
        return set(jinja2.meta.find_undeclared_variables(_ENV.parse(self.body)))

    def render(self, values: dict[str, Any], score_mode: str = "text") -> list[Message]:
        """Render the messages for one item. Raises :class:`RubricError` on missing inputs."""
        missing = [name for name in self.spec.inputs.required if _missing(values.get(name))]
        if missing:
            raise RubricError(f"rubric '{self.id}' needs {', '.join(repr(m) for m in missing)}, which the item lacks")
        ctx = {k: v for k, v in values.items() if not _missing(v)}  # "" is a value (an empty answer is judged)
        ctx["scale"] = self.spec.scale.model_dump() if self.spec.scale else None
        ctx["choices"] = self.spec.choices
        ctx["flag"] = self.spec.flag
        ctx["strict"] = self.spec.strict
        ctx["score_mode"] = score_mode
        messages: list[Message] = []
        _BUDGET.steps, _BUDGET.deadline = MAX_RENDER_STEPS, time.monotonic() + MAX_RENDER_SECONDS
        try:
            context = self._template.new_context(ctx)
            blocks = self._template.blocks
            system = _render_block(blocks["system"], context, self.source).strip() if "system" in blocks else ""
            user = _render_block(blocks["user"], context, self.source).strip()
        except jinja2.UndefinedError as exc:
            m = re.match(r"'(\w+)' is undefined", exc.message or "")
            if m and m.group(1) in self.spec.inputs.optional:
                hint = f"optional input '{m.group(1)}' is printed without a {{% if {m.group(1)} %}} guard"
            else:
                hint = f"{exc.message} (declare it in inputs or pass it)"
            raise RubricError(f"rendering rubric '{self.id}': {hint}", path=self.source) from None
        except (jinja2.exceptions.SecurityError, OverflowError, MemoryError) as exc:
            raise RubricError(f"rubric '{self.id}' tried an unsafe operation: {exc}", path=self.source) from None
        except _RenderLimit as exc:
            raise RenderLimitError(f"rubric '{self.id}': {exc}", path=self.source, line=self._line_of(exc)) from None
        except RecursionError as exc:  # a macro or recursive loop that calls itself without end
            line = self._line_of(exc)
            raise RenderLimitError(
                f"rubric '{self.id}': rendering recursed too deeply (a macro or loop that calls itself?)",
                path=self.source,
                line=line,
            ) from None
        finally:
            _BUDGET.steps, _BUDGET.deadline = MAX_RENDER_STEPS, float("inf")
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user + "\n\n" + self.format_instructions(score_mode)})
        return messages

    def render_item(self, item: Any, values: dict[str, Any] | None = None, score_mode: str = "text") -> list[Message]:
        """:meth:`render` for a data item (its ``values()``, or ``values``): a prompt made too long by the item's
        own text is the item's fault, a :class:`DataError` naming its file, line and longest field."""
        values = item.values() if values is None else values
        try:
            return self.render(values, score_mode)
        except PromptTooLongError:
            texts = {k: v for k, v in values.items() if isinstance(v, str)}
            field = max(texts, key=lambda k: len(texts[k])) if texts else None
            size = f" ('{field}' holds {len(texts[field]):,} characters)" if field else ""
            raise item.error(
                f"the prompt for item '{item.id}' passes {MAX_RENDER_CHARS:,} characters{size}: shorten it or leave "
                "it out",
                field,
            ) from None

    def _line_of(self, exc: BaseException) -> int | None:
        """The rubric file's line of the template code running when ``exc`` was raised (the innermost)."""
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<template>":
                line = self._template.get_corresponding_lineno(tb.tb_lineno)
            tb = tb.tb_next
        return None if line is None else self.body_line + line - 1

    @property
    def verdict_prefix(self) -> str:
        """What precedes the verdict in a reasoned answer (reason score mode): ``Verdict:`` or ``Score:``."""
        return self.kind_info.verdict_prefix

    def cut_reasoning(self, text: str) -> str:
        """A reasoned answer's reasoning: the text before its own verdict prefix (if it wrote one), stripped."""
        at = text.find(self.verdict_prefix)
        return (text if at < 0 else text[:at]).strip()

    def format_instructions(self, score_mode: str) -> str:
        """How the judge must answer, generated from the scale: one wording for every rubric."""
        return self.kind_info.format_instructions(self.spec, score_mode)

    def json_schema(self) -> dict[str, Any]:
        """The verdict schema for structured output."""
        return self.kind_info.json_schema(self.spec)

    def sample_values(self) -> dict[str, Any]:
        """Placeholder values for every declared input, for validation renders."""
        names = self.spec.inputs.required + self.spec.inputs.optional
        return {n: f"<{n}>" for n in names}

    def validate(self) -> list[str]:
        """Problems found without any model call: undeclared variables, render errors. Empty = fine."""
        problems: list[str] = []
        declared = set(self.spec.inputs.required) | set(self.spec.inputs.optional) | set(TEMPLATE_GLOBALS)
        undeclared = sorted(self.variables - declared)
        if undeclared:
            problems.append(f"template uses {', '.join(undeclared)} but inputs do not declare them")
        for mode in self.kind_info.score_modes:
            try:
                self.render(self.sample_values(), mode)
                # and with optional inputs absent, which is how most items arrive
                self.render({n: f"<{n}>" for n in self.spec.inputs.required}, mode)
            except RubricError as exc:
                if str(exc) not in problems:
                    problems.append(str(exc))
                if isinstance(exc, RenderLimitError):
                    break  # the other score modes would only spend the same bound again
        return problems

    def __repr__(self) -> str:
        return f"Rubric({self.id!r}, version={self.spec.version!r}, hash={self.content_hash})"


def _missing(value: Any) -> bool:
    """Whether an input is absent: None or NaN (a blank cell read by pandas). An empty string is present."""
    return value is None or (isinstance(value, float) and value != value)


def parse_rubric(text: str, source: str = "<string>") -> Rubric:
    """Parse a rubric from its file text."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise RubricError("rubric must start with a '---' line opening the YAML front matter", path=source, line=1)
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise RubricError("front matter is not closed by a '---' line", path=source, line=1)
    try:
        meta = load_yaml("".join(lines[1:end]))[0] or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else None
        raise RubricError(
            f"front matter is not valid YAML: {getattr(exc, 'problem', exc)}", path=source, line=line
        ) from None
    if not isinstance(meta, dict):
        raise RubricError("front matter must be a YAML mapping", path=source, line=2)
    try:
        spec = RubricSpec.model_validate(meta)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(front matter)"
        line = _key_line(lines[1:end], str(first["loc"][0])) if first["loc"] else None
        raise RubricError(f"field '{field}': {first['msg']}", path=source, line=line) from None
    return Rubric(spec, "".join(lines[end + 1 :]), source=source, text=text, body_line=end + 2)


def _key_line(front: list[str], key: str) -> int | None:
    for i, line in enumerate(front):
        if line.startswith(f"{key}:"):
            return i + 2
    return None


def builtin_dir() -> Path:
    """Where the built-in rubrics live (the repo's ``rubrics/`` or the installed package data)."""
    for cand in BUILTIN_DIR_CANDIDATES:
        if cand.is_dir():
            return cand
    raise RubricError("built-in rubrics not found: reinstall the package")


def list_rubrics() -> list[Rubric]:
    """Every built-in rubric, sorted by id."""
    return sorted((load_rubric(p) for p in builtin_dir().glob("*.j2")), key=lambda r: r.id)


def load_rubric(name_or_path: str | Path) -> Rubric:
    """Load a built-in rubric by id, or a rubric file by path."""
    p = Path(name_or_path)
    if p.suffix == ".j2" or p.exists() or "/" in str(name_or_path):
        if not p.exists():
            raise RubricError("rubric file not found", path=p)
        if p.is_dir():
            raise RubricError("is a folder, not a rubric file", path=p)
        return parse_rubric(p.read_text(encoding="utf-8"), str(p))
    cand = builtin_dir() / f"{name_or_path}.j2"
    if not cand.exists():
        known = ", ".join(sorted(q.stem for q in builtin_dir().glob("*.j2")))
        raise RubricError(f"no built-in rubric '{name_or_path}' (built-ins: {known}; or pass a .j2 file path)")
    return parse_rubric(cand.read_text(encoding="utf-8"), str(cand))


def describe(rubric: Rubric) -> dict[str, Any]:
    """A JSON-able summary for ``judge rubrics show``."""
    return json.loads(rubric.spec.model_dump_json()) | {"hash": rubric.content_hash, "source": rubric.source}
