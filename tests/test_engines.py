"""Engines: the in-process one and Ray Data on a real local Ray instance give the same results.

One Ray instance for the module (startup is several seconds): 2 CPUs, no dashboard, on 127.0.0.1,
its temp folder under pytest's. Models are the tiny random ones from :mod:`judge.testing.tiny`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from judge.baselines._run import run_baseline
from judge.engines import LocalEngine, get_engine, using
from judge.errors import ConfigError, DataError
from judge.metrics import get_metric
from judge.metrics.base import EvalInput
from judge.testing.tiny import causal_lm, sentence_transformer
from tests.conftest import _guarded_connect

ray = pytest.importorskip("ray", reason="the ray engine needs the 'scale' extra: pip install 'judge[scale]'")

WORDS = "the cat sat on the mat . paris is the capital of france and a big red dog ran in the park".split()  # noqa: SIM905
ITEMS = [
    {
        "id": f"i{k}",
        "output": None if k == 5 else " ".join(WORDS[k % 7 : k % 7 + k % 13]),
        "reference": " ".join(WORDS[(k % 5) :]),
    }
    for k in range(30)
]


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    os.environ["HF_HUB_OFFLINE"] = "1"  # the workers inherit it
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _guarded_connect)  # loopback only, as every test
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            configure_logging=False,
        )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(causal_lm(tmp_path_factory.mktemp("lm")))


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sentence_transformer(tmp_path_factory.mktemp("st") / "st")


def _square_batch(offset: int) -> object:
    return lambda batch: [(x, x * x + offset) for x in batch]


def _squares(offset: int = 0) -> object:
    """A factory (module level: it pickles to the workers)."""
    return _square_batch(offset)


def _same(local: list[dict], remote: list[dict], field: str) -> None:
    assert [r["id"] for r in remote] == [r["id"] for r in local]
    for a, b in zip(local, remote, strict=True):
        assert a.get("reason") == b.get("reason")
        assert set(a) == set(b)
        if a[field] is None:
            assert b[field] is None
        else:
            assert b[field] == pytest.approx(a[field], rel=1e-5)


def test_local_engine_batches_in_order() -> None:
    import functools

    out = list(LocalEngine().map(functools.partial(_squares, 1), range(10), batch_size=3))
    assert out == [(x, x * x + 1) for x in range(10)]


def test_unknown_engine_and_address_without_ray() -> None:
    with pytest.raises(ConfigError, match="unknown engine"):
        get_engine("spark")
    with pytest.raises(ConfigError, match="--address is for --engine ray"):
        get_engine("local", "ray://head:10001")


def test_ray_engine_yields_in_input_order(ray_instance: None) -> None:
    import functools

    out = list(get_engine("ray").map(functools.partial(_squares, 2), range(50), batch_size=7))
    assert out == [(x, x * x + 2) for x in range(50)]


def test_ray_perplexity_matches_local(ray_instance: None, lm_dir: str) -> None:
    local = run_baseline("perplexity", ITEMS, engine=LocalEngine(), model=lm_dir, items_per_batch=30)
    remote = run_baseline("perplexity", ITEMS, engine=get_engine("ray"), model=lm_dir, items_per_batch=4)
    _same(local.records, remote.records, "perplexity")
    assert local.records[5]["reason"] == "no output"
    assert remote.summary["engine"] == "ray" and remote.summary["scored"] == local.summary["scored"]
    for key in ("corpus_perplexity", "corpus_bits_per_byte", "mean_item_perplexity"):
        assert remote.summary[key] == pytest.approx(local.summary[key], rel=1e-6)
    assert remote.summary["tokens"] == local.summary["tokens"]


@pytest.mark.slow  # a second actor pool loading sentence-transformers: ~13 s
def test_ray_similarity_matches_local(ray_instance: None, st_dir: Path) -> None:
    local = run_baseline("similarity", ITEMS, engine=LocalEngine(), model=str(st_dir))
    remote = run_baseline("similarity", ITEMS, engine=get_engine("ray"), model=str(st_dir), items_per_batch=8)
    _same(local.records, remote.records, "similarity")
    assert remote.summary["mean_similarity"] == pytest.approx(local.summary["mean_similarity"], rel=1e-6)


def test_ray_raises_the_workers_config_error(ray_instance: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        run_baseline("perplexity", ITEMS[:3], engine=get_engine("ray"), model=str(tmp_path / "nope"))


def test_cli_resumes_from_the_partial_output(ray_instance: None, lm_dir: str, tmp_path: Path) -> None:
    from judge.cli import cli

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS), encoding="utf-8")
    out = tmp_path / "ppl.jsonl"
    args = ["baseline", "perplexity", str(data), "--model", lm_dir, "--out", str(out)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    full = [json.loads(line) for line in out.read_text().splitlines()]

    # an interrupted run: three records finished (one marked, to see that it is kept, not recomputed)
    kept = [full[0], dict(full[1], perplexity=123.0), full[2]]
    out.unlink()
    partial = tmp_path / "ppl.jsonl.partial"
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"id": "i3", "perpl', encoding="utf-8")
    again = CliRunner().invoke(cli, [*args, "--engine", "ray"])
    assert again.exit_code == 0, again.output
    assert "3 resumed" in again.output
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    assert resumed[1]["perplexity"] == 123.0 and not partial.exists()
    _same(full[2:], resumed[2:], "perplexity")


def test_cli_rejects_a_partial_from_another_command(lm_dir: str, tmp_path: Path) -> None:
    from judge.cli import cli

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS[:3]), encoding="utf-8")
    (tmp_path / "o.jsonl.partial").write_text('{"id": "i0", "similarity": 0.5}\n', encoding="utf-8")
    res = CliRunner().invoke(
        cli, ["baseline", "perplexity", str(data), "--model", lm_dir, "-o", str(tmp_path / "o.jsonl")]
    )
    assert isinstance(res.exception, DataError) and "another command" in str(res.exception)


@pytest.mark.slow
def test_eval_metrics_on_ray_match_local(ray_instance: None, lm_dir: str, st_dir: Path) -> None:
    n = len(ITEMS)
    data = EvalInput(
        ids=[it["id"] for it in ITEMS],
        outputs=[it["output"] for it in ITEMS],
        inputs=[""] * n,
        references=[[it["reference"]] for it in ITEMS],
        contexts=[None] * n,
    )
    bert = str(st_dir.parent / (st_dir.name + "-base"))  # the tiny BERT under the sentence-transformer
    for metric, options in (("perplexity", {"model": lm_dir}), ("bertscore", {"model": bert, "idf": True})):
        fn = get_metric(metric).fn
        local = fn(data, dict(options))
        with using(get_engine("ray")):
            remote = fn(data, dict(options))
        assert remote.errors == local.errors
        assert remote.scores[metric] == pytest.approx(local.scores[metric], rel=1e-5, nan_ok=True)
        assert remote.settings["engine"] == "ray"


def test_model_system_generates_on_the_actor_pool_under_the_local_engines_cache_keys(
    ray_instance: None, tmp_path: Path
) -> None:
    from judge.eval.run import evaluate
    from judge.testing.tiny import tiny_causal_lm

    model = tiny_causal_lm(tmp_path / "m", seed=5)
    items = [{"id": f"q{k}", "input": f"Question {k}: the quick brown fox {'jumps ' * (k % 5)}?"} for k in range(20)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    (tmp_path / "other.jsonl").write_text("".join(json.dumps({"id": it["id"], "output": "fox"}) + "\n" for it in items))

    def run(engine: str, out: str) -> list[dict]:
        suite = {
            "data": "items.jsonl",
            "systems": {"other": "other.jsonl", "tuned": {"model": f"local/{model}"}},
            "generate": {"max_new_tokens": 10},
            "metrics": ["self_bleu"],
            "engine": engine,
            "bootstrap": 100,
            "permutations": 100,
        }
        evaluate(suite, base_dir=tmp_path, out=tmp_path / out)
        return [json.loads(x) for x in (tmp_path / out / "outputs" / "tuned.jsonl").read_text().splitlines()]

    on_ray = run("ray", "ray")
    assert [r["id"] for r in on_ray] == [it["id"] for it in items] and not any(r["cached"] for r in on_ray)
    local = run("local", "local")  # the same keys: everything comes from what the actors generated
    assert all(r["cached"] for r in local)
    assert [r["output"] for r in local] == [r["output"] for r in on_ray]
    from judge.config import GenerateConfig
    from judge.providers.local import LocalProvider

    fresh = LocalProvider(str(model)).generate_batch(
        [[{"role": "user", "content": it["input"]}] for it in items[:3]], GenerateConfig(max_tokens=10)
    )
    assert [o.text for o in fresh] == [r["output"] for r in on_ray[:3]]  # and they are this model's answers
