"""Progress on every long command: the same --progress/--no-progress flags, a bar with items/s and ETA
per stage on stderr when asked (or on a terminal), nothing when not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from judge.cli import cli
from judge.testing.server import LoopbackServer

from .conftest import EXAMPLES

LONG_COMMANDS = [
    ("score",),
    ("eval",),
    ("baseline", "perplexity"),
    ("baseline", "entailment"),
    ("baseline", "pmi"),
    ("baseline", "similarity"),
    ("mtbench", "answer"),
    ("mtbench", "judge"),
    ("calibrate",),
]


def command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    ctx = click.Context(cli)
    for name in path:
        assert isinstance(cmd, click.Group)
        found = cmd.get_command(ctx, name)
        assert found is not None, path
        cmd = found
    return cmd


def test_every_long_command_takes_the_same_progress_flags() -> None:
    helps = set()
    for path in LONG_COMMANDS:
        opts = [p for p in command(path).params if p.name == "progress"]
        assert len(opts) == 1, f"judge {' '.join(path)} has no --progress/--no-progress"
        opt = opts[0]
        assert isinstance(opt, click.Option)
        assert (opt.opts, opt.secondary_opts, opt.default) == (["--progress"], ["--no-progress"], None), path
        helps.add(opt.help)
    assert len(helps) == 1  # worded once


def test_shared_options_mean_the_same_on_every_command() -> None:
    """The option groups of judge.cli_options: an option several commands take is worded and typed once, and
    the engine choices are judge.engines.ENGINES."""
    from judge.engines import ENGINES

    seen: dict[str, set[tuple[object, ...]]] = {}
    for path in [*LONG_COMMANDS, ("calibrate",), ("label", "plan")]:
        for p in command(path).params:
            if isinstance(p, click.Option) and p.name in SHARED_OPTIONS:
                seen.setdefault(p.name, set()).add((tuple(p.opts), p.help, p.type.name, p.metavar))
                if p.name == "engine":
                    assert isinstance(p.type, click.Choice) and tuple(p.type.choices) == ENGINES, path
    assert {name: len(kinds) for name, kinds in seen.items()} == {name: 1 for name in SHARED_OPTIONS}


SHARED_OPTIONS = ("max_unscored", "progress", "batch_poll", "cache_namespace", "keep_failed", "no_cache",
                  "api_key", "local_dtype")  # fmt: skip


def bar_lines(stderr: str) -> list[str]:
    """The states a tqdm bar drew (it rewrites its line with carriage returns)."""
    return [s for s in re.split(r"[\r\n]", stderr) if "|" in s and "/s" in s]


def test_eval_shows_a_bar_per_metric_and_system_only_when_asked(tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "input": "x", "reference": f"answer {i}"} for i in range(5)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for system in ("base", "tuned"):
        outs = [{"id": r["id"], "output": r["reference"] + (" more" if system == "base" else "")} for r in rows]
        (tmp_path / f"{system}.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outs))
    suite = {
        "data": "items.jsonl",
        "systems": {"base": "base.jsonl", "tuned": "tuned.jsonl"},
        "baseline": "base",
        "metrics": ["exact_match", "bleu"],
        "bootstrap": 100,
        "permutations": 100,
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    runner = CliRunner()
    args = ["eval", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "run")]
    shown = runner.invoke(cli, [*args, "--progress"])
    assert shown.exit_code == 0, shown.output
    lines = bar_lines(shown.stderr)
    for stage in ("exact_match base", "exact_match tuned", "bleu base", "bleu tuned"):
        assert any(line.startswith(stage) for line in lines), (stage, lines)
    # items of the metric over all systems (5 items x 2 systems), rate and elapsed<remaining
    assert any("/10 [" in line and "item/s" in line and "<" in line for line in lines), lines
    quiet = runner.invoke(cli, args)  # CliRunner's stderr is no terminal: no bar
    assert quiet.exit_code == 0 and bar_lines(quiet.stderr) == [] and quiet.stderr.count("\r") == 0


def test_score_and_mtbench_answer_show_items_per_second(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{k}", "input": "q", "output": f"o{k}"}) + "\n" for k in range(4)))
    runner = CliRunner()
    base = ["score", str(data), "-r", "relevance", "--judge", "fake/echo-score", "-o", str(tmp_path / "v.jsonl")]
    shown = runner.invoke(cli, [*base, "--progress"])
    assert shown.exit_code == 0, shown.output
    assert any("/4 [" in line and "item/s" in line for line in bar_lines(shown.stderr))  # n/total, rate
    forced_off = runner.invoke(cli, [*base, "--no-progress"])
    assert forced_off.exit_code == 0 and bar_lines(forced_off.stderr) == []

    with LoopbackServer() as srv:
        args = ["mtbench", "answer", "--questions", str(EXAMPLES / "mtbench" / "question.jsonl"), "--model"]
        args += ["openai/loop", "--base-url", srv.base_url, "--out", str(tmp_path / "a.jsonl"), "--progress"]
        res = runner.invoke(cli, args, env={"OPENAI_API_KEY": "k"})
    assert res.exit_code == 0, res.output
    assert any(line.startswith("answers loop") and "item/s" in line for line in bar_lines(res.stderr))


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_helper_counts_and_closes(enabled: bool, capsys: pytest.CaptureFixture[str]) -> None:
    from judge.progress import progress_bar

    with progress_bar(3, "stage", enabled) as bar:
        for _ in range(3):
            bar.update(1)
    err = capsys.readouterr().err
    assert ("stage:" in err and "/3 [" in err) if enabled else err == ""


def test_a_long_metric_moves_the_bar_from_inside_even_through_a_helper_thread() -> None:
    import asyncio

    from judge.progress import items_done, reporting_to
    from judge.runner import run_sync

    class Bar:
        n = 0

        def update(self, k: int = 1) -> None:
            self.n += k

    async def inner() -> None:
        items_done(2)

    async def in_a_running_loop() -> None:  # run_sync then runs `inner` in a helper thread
        run_sync(inner())

    bar = Bar()
    items_done(5)  # nobody listens: nothing happens
    with reporting_to(bar) as reported:
        items_done(3)
        asyncio.run(in_a_running_loop())
        items_done(0)
    items_done(4)
    assert bar.n == reported() == 5


def test_calibrate_names_each_stage_per_group_only_when_asked(tmp_path: Path) -> None:
    from calibration.core import STAGES

    ids = [f"i{k}" for k in range(24)]
    judge_rows = [f"{i},{k % 5 + 1},{'ab'[k % 2]}" for k, i in enumerate(ids)]
    (tmp_path / "judge.csv").write_text("id,score,topic\n" + "\n".join(judge_rows) + "\n")
    label_rows = [f"{i},{who},{(k + (who == 'b') * (k % 3 == 0)) % 5 + 1}" for k, i in enumerate(ids) for who in "ab"]
    (tmp_path / "labels.csv").write_text("id,annotator,label\n" + "\n".join(label_rows) + "\n")
    runner = CliRunner()
    args = ["calibrate", "--judge", str(tmp_path / "judge.csv"), "--human", str(tmp_path / "labels.csv")]
    args += ["--label-type", "ordinal", "--bootstrap", "200", "--by", "topic"]
    shown = runner.invoke(cli, [*args, "--progress"])
    assert shown.exit_code == 0, shown.output
    lines = bar_lines(shown.stderr)
    total = len(STAGES) * 3  # the whole set, then each of the two topics
    for prefix in ("", "topic=a: ", "topic=b: "):
        for stage in STAGES:
            assert any(line.startswith(f"calibrate {prefix}{stage}: ") for line in lines), (prefix, stage, lines)
    assert any(line.startswith("calibrate done: ") and f" {total}/{total} [" in line for line in lines), lines
    assert any("stage/s" in line for line in lines)
    quiet = runner.invoke(cli, args)  # CliRunner's stderr is no terminal: no bar
    assert quiet.exit_code == 0 and bar_lines(quiet.stderr) == [] and quiet.stderr.count("\r") == 0
    assert quiet.stdout == shown.stdout  # the same report either way
