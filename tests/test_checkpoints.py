"""From checkpoints to verdict: systems that are models, their own loss, multiple-choice benchmarks,
checkpoint sweeps, LoRA adapters and the training callback -- on tiny real models, checked against
transformers' own computations."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from judge.testing.tiny import tiny_causal_lm
from tests.conftest import judge_cli, shared_data

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {"base": tiny_causal_lm(root / "base", seed=7)}
    # checkpoint folders whose names sort differently from their steps: the step comes from trainer_state.json
    for name, step, seed in (("checkpoint-b", 5, 1), ("checkpoint-a", 20, 2), ("checkpoint-c", 10, 3)):
        d = tiny_causal_lm(root / "run" / name, seed=seed)
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        out[name] = d
    return out


ITEMS = [
    {"id": "a", "input": "The quick brown fox?", "reference": "The answer is Paris."},
    {"id": "b", "input": "Question? Answer!", "reference": "The lazy dog jumps over the fox, right or wrong."},
    {"id": "c", "input": "Score: 1 2 3", "reference": None},
    {"id": "d", "input": "The capital of France is", "reference": "Paris; the answer is right."},
    {"id": "e", "input": "x", "reference": "4 5 6 7 8 9"},
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _transformers_loss(model_dir: Path, prompt: list[dict], answer: str) -> float:
    """Independent: the chat template renders the whole conversation; labels mask the prompt; HF's loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=False)
    assert full.startswith(head)
    head_ids = tok(head, add_special_tokens=False)["input_ids"]
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(head_ids)] == head_ids
    ids = torch.tensor([full_ids])
    labels = ids.clone()
    labels[0, : len(head_ids)] = -100
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


def test_loss_is_transformers_own_masked_loss_and_estimate_loss_weights_tokens(models, tmp_path):
    from judge.eval.run import evaluate
    from judge.local.models import load_causal_lm

    _write(tmp_path / "items.jsonl", ITEMS)
    suite = {
        "data": "items.jsonl",
        "systems": {
            "base": {"model": f"local/{models['base']}"},
            "other": {"model": f"local/{models['checkpoint-a']}"},
        },
        "generate": {"system_prompt": "Answer briefly."},
        "metrics": ["loss"],
        "bootstrap": 200,
        "permutations": 200,
    }
    result = evaluate(suite, base_dir=tmp_path)
    rows = {(r["id"], r["system"], r["metric"]): r for r in result.scores}
    for system, folder in (("base", models["base"]), ("other", models["checkpoint-a"])):
        for item in ITEMS:
            got = rows[(item["id"], system, "loss")]
            if item["reference"] is None:
                assert got["status"] == "unscored" and "no reference" in got["error"]
                continue
            prompt = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": item["input"]}]
            want = _transformers_loss(folder, prompt, item["reference"])
            assert got["score"] == pytest.approx(want, abs=1e-4)
            assert rows[(item["id"], system, "loss_ppl")]["score"] == pytest.approx(math.exp(want), rel=1e-4)
            assert rows[(item["id"], system, "loss_bits")]["score"] == pytest.approx(want / math.log(2), abs=1e-4)
    # the system's value is token-weighted, as estimate_loss computes it for a training loop
    import judge

    model, tok = load_causal_lm(str(models["base"]))
    scored = [it for it in ITEMS if it["reference"]]
    est = judge.estimate_loss(
        model,
        tok,
        [it["reference"] for it in scored],
        prompts=[it["input"] for it in scored],
        system_prompt="Answer briefly.",
    )
    assert result.systems["base"]["loss"]["value"] == pytest.approx(est["loss"], rel=1e-9)
    assert result.systems["base"]["loss_bpb"]["value"] == pytest.approx(est["bits_per_byte"], rel=1e-9)
    assert est["per_item"] == pytest.approx([rows[(it["id"], "base", "loss")]["score"] for it in scored], rel=1e-9)
    assert result.systems["base"]["loss"]["n"] == 4 and result.deltas["other"]["loss"]["n_pairs"] == 4
    # plain texts: transformers' loss over the whole text after the start token
    text = "The quick brown fox jumps over the lazy dog."
    ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]])
    with torch.no_grad():
        want = float(model(input_ids=ids, labels=ids).loss)
    assert judge.estimate_loss(model, tok, [text])["loss"] == pytest.approx(want, abs=1e-5)


def _independent_choice_logliks(model_dir: Path, context: str, choices: list[str]) -> list[float]:
    """lm-evaluation-harness's request shape: one forward per choice, the choice's tokens summed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    head = tok(context)["input_ids"]
    out = []
    for choice in choices:
        tail = tok(choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tail])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        out.append(sum(float(logp[len(head) - 1 + k, t]) for k, t in enumerate(tail)))
    return out


def test_choice_accuracy_equals_one_forward_per_choice(models, tmp_path):
    from judge.eval.run import evaluate

    questions = [
        {
            "id": f"q{i}",
            "question": f"Question {i}: the quick brown fox jumps over the",
            "choices": ["lazy dog", "Paris", "fox", "right or wrong answer"][: 2 + i % 3],
            "answer": i % 2,
            "subject": "animals" if i % 2 else "places",
        }
        for i in range(9)
    ]
    _write(tmp_path / "mc.jsonl", questions)
    _write(tmp_path / "items.jsonl", ITEMS)
    suite = {
        "data": "items.jsonl",
        "systems": {
            "base": {"model": f"local/{models['base']}"},
            "tuned": {"model": f"local/{models['checkpoint-c']}"},
        },
        "metrics": [{"metric": "choice_accuracy", "data": "mc.jsonl", "name": "mc"}],
        "gates": [{"metric": "mc", "delta_min": -0.02}],
        "bootstrap": 200,
        "permutations": 200,
    }
    result = evaluate(suite, base_dir=tmp_path)
    rows = {(r["id"], r["system"], r["metric"]): r["score"] for r in result.scores}
    for system, folder in (("base", models["base"]), ("tuned", models["checkpoint-c"])):
        acc, norm = [], []
        for q in questions:
            choices = [f" {c}" for c in q["choices"]]
            ll = _independent_choice_logliks(folder, q["question"], choices)
            acc.append(float(int(np.argmax(ll)) == q["answer"]))
            norm.append(float(int(np.argmax([v / len(c) for v, c in zip(ll, choices, strict=True)])) == q["answer"]))
            assert rows[(q["id"], system, "mc")] == acc[-1]
            assert rows[(q["id"], system, "mc_norm")] == norm[-1]
        assert result.systems[system]["mc"]["value"] == pytest.approx(np.mean(acc))
        per_subject = result.details[system]["choice_accuracy"]["per_subject"]
        assert sum(v["n"] for v in per_subject.values()) == 9
    assert result.deltas["tuned"]["mc"]["n_pairs"] == 9
    assert [g["system"] for g in result.gates] == ["tuned"]


def test_mmlu_loader_reads_the_release_and_refuses_a_malformed_row(tmp_path):
    from judge.benchmarks import load_benchmark, stratified
    from judge.errors import DataError

    mmlu = shared_data("mmlu")
    test = load_benchmark(mmlu)
    assert len(test) == 14042 and len({q.subject for q in test}) == 57
    first = next(q for q in test if q.id == "abstract_algebra/0")
    assert first.context.startswith(
        "The following are multiple choice questions (with answers) about abstract algebra."
    )
    assert first.context.endswith("\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:") and first.answer == 1
    subset = stratified(test, 2, seed=0)
    assert len(subset) == 114 and subset == stratified(test, 2, seed=0)
    five = load_benchmark(mmlu, shots=5)
    assert five[0].context.count("\nAnswer:") == 6  # five worked exemplars from dev/, then the question
    tqa = load_benchmark(shared_data("truthfulqa", "TruthfulQA.csv"))
    assert len(tqa) == 790 and all(q.answer == 0 and len(q.choices) >= 2 for q in tqa)

    bad = tmp_path / "bad_test.csv"
    bad.write_text('"ok?",a,b,c,d,A\n"multi\nline?",a,b,c,d,A\n"wrong",a,b,c,d,E\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad_test\.csv:4.*answer"):
        load_benchmark(bad)


def _single_outputs(folder: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Reference: the same provider generating one prompt at a time (no padding)."""
    from judge.config import GenerateConfig
    from judge.providers.local import LocalProvider

    provider = LocalProvider(str(folder))
    config = GenerateConfig(max_tokens=max_new_tokens)

    async def run() -> list[str]:
        return [(await provider.generate([{"role": "user", "content": p}], config)).text for p in prompts]

    return asyncio.run(run())


def test_sweep_generates_once_in_batches_equal_to_one_at_a_time(models, tmp_path, capsys):
    import shutil

    _write(tmp_path / "items.jsonl", ITEMS)
    run = tmp_path / "run"
    shutil.copytree(models["base"].parent / "run", run)
    suite = {
        "data": "items.jsonl",
        "systems": {
            "base": {"model": f"local/{models['base']}"},
            "tuned": {"sweep": "run/checkpoint-*"},
        },
        "generate": {"max_new_tokens": 12},
        "metrics": ["token_f1", "loss"],
        "gates": [{"metric": "loss", "system": "tuned", "delta_max": 100}],
        "bootstrap": 200,
        "permutations": 200,
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    code, stdout, err = judge_cli(capsys, "eval", str(tmp_path / "suite.yaml"), "--out", str(out), "--json")
    assert code == 0, err
    results = json.loads(stdout)
    assert "sweep tuned" not in stdout  # --json prints the JSON alone
    sweep = results["sweeps"]["tuned"]
    assert sweep["steps"] == [5, 10, 20]  # trainer_state's global_step, not the folder names' order
    assert sweep["systems"] == ["tuned@5", "tuned@10", "tuned@20"]
    assert [g["system"] for g in results["gates"]] == sweep["systems"]
    losses = [results["systems"][s]["loss"]["value"] for s in sweep["systems"]]
    assert sweep["best"]["loss"] == sweep["systems"][int(np.argmin(losses))]
    assert (
        results["provenance"]["models"]["tuned@5"]["fingerprint"]
        != results["provenance"]["models"]["base"]["fingerprint"]
    )
    prompts = [it["input"] for it in ITEMS]
    for system, folder in (("base", "base"), ("tuned@5", "checkpoint-b"), ("tuned@20", "checkpoint-a")):
        records = [json.loads(line) for line in (out / "outputs" / f"{system}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in records] == [it["id"] for it in ITEMS]
        assert [r["output"] for r in records] == _single_outputs(models[folder], prompts, 12)
        assert not any(r["cached"] for r in records)
    # the report draws every metric against the step (CI band, baseline, best ringed); the table lists the sweep
    code, _, err = judge_cli(capsys, "report", str(out / "results.json"), "--out", str(tmp_path / "report.html"))
    assert code == 0, err
    html = (tmp_path / "report.html").read_text()
    assert "tuned: loss by training step with 95% CI bands" in html and 'aria-label="loss by step"' in html
    assert "training / validation loss" not in html  # no train: split in this suite, so no such curve
    assert not any(results["details"][s]["loss"]["cached"] for s in ("base", *sweep["systems"]))
    # a rerun generates and computes nothing: outputs and losses come from the cache, keyed by content; a sweep
    # that gained a checkpoint computes only for it
    tiny_causal_lm(run / "checkpoint-d", seed=4)
    (run / "checkpoint-d" / "trainer_state.json").write_text(json.dumps({"global_step": 30}))
    code, stdout, err = judge_cli(capsys, "eval", str(tmp_path / "suite.yaml"), "--out", str(out), "--json")
    assert code == 0, err
    again = json.loads(stdout)
    assert again["sweeps"]["tuned"]["systems"] == ["tuned@5", "tuned@10", "tuned@20", "tuned@30"]
    for system in ("base", *sweep["systems"]):
        records = [json.loads(line) for line in (out / "outputs" / f"{system}.jsonl").read_text().splitlines()]
        assert all(r["cached"] for r in records)
        assert again["details"][system]["loss"]["cached"]
        assert again["systems"][system]["loss"] == results["systems"][system]["loss"]
    new = [json.loads(line) for line in (out / "outputs" / "tuned@30.jsonl").read_text().splitlines()]
    assert not any(r["cached"] for r in new) and not again["details"]["tuned@30"]["loss"]["cached"]


def test_bad_model_systems_exit_2_before_anything_is_written(models, tmp_path, capsys):
    _write(tmp_path / "items.jsonl", ITEMS)
    _write(tmp_path / "base.jsonl", [{"id": it["id"], "output": "x"} for it in ITEMS])
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "mc.jsonl").write_text(
        '{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"question": "q2", "choices": ["a"], "answer": 0}\n'
    )
    good = f"local/{models['base']}"
    cases = {
        "missing folder": (
            {"base": {"model": good}, "t": {"model": "local/./no/such/ckpt"}},
            ["loss"],
            "does not exist",
        ),
        "not a model": ({"base": {"model": good}, "t": {"model": "local/notamodel"}}, ["loss"], "no config.json"),
        "empty sweep": (
            {"base": {"model": good}, "t": {"sweep": "runs/checkpoint-*"}},
            ["loss"],
            "matches no checkpoint",
        ),
        "loss on a file": (
            {"base": "base.jsonl", "t": {"model": good}},
            ["loss"],
            "system 'base' is a file of outputs",
        ),
        "bad benchmark row": (
            {"base": {"model": good}, "t": {"model": good}},
            [{"metric": "choice_accuracy", "data": "mc.jsonl"}],
            "mc.jsonl:2",
        ),
    }
    for label, (systems, metrics, message) in cases.items():
        suite = {"data": "items.jsonl", "systems": systems, "metrics": metrics}
        (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
        out = tmp_path / f"out-{label.replace(' ', '-')}"
        code, _, err = judge_cli(capsys, "eval", str(tmp_path / "suite.yaml"), "--out", str(out))
        assert code == 2, (label, err)
        assert message in err, (label, err)
        assert "suite.yaml:" in err, (label, err)
        assert not out.exists(), label


def test_api_model_system_generates_through_the_server_and_a_failed_item_stays_unscored(models, tmp_path):
    from judge.eval.run import evaluate
    from judge.testing.server import LoopbackServer, Reply

    def responder(request: dict) -> Reply | str:
        text = request["messages"][-1]["content"]
        if "France" in text:
            return "400"  # this item's generation is refused: unscored with the reason, not dropped
        return Reply(f"The answer is {text}", finish_reason="stop")

    _write(tmp_path / "items.jsonl", ITEMS)
    with LoopbackServer(responder=responder) as srv:
        suite = {
            "data": "items.jsonl",
            "systems": {
                "base": {"model": f"local/{models['base']}"},
                "api": {"model": "openai/served", "base_url": srv.base_url},
            },
            "generate": {"max_new_tokens": 8, "stop": ["\n\n"]},
            "metrics": ["token_f1"],
            "bootstrap": 200,
            "permutations": 200,
        }
        result = evaluate(suite, base_dir=tmp_path, out=tmp_path / "out")
        sent = [r for r in srv.requests if r["model"] == "served"]
    assert len(sent) == len(ITEMS) and all(r["stop"] == ["\n\n"] and r["max_tokens"] == 8 for r in sent)
    rows = {(r["id"], r["system"]): r for r in result.scores}
    assert rows[("d", "api")]["status"] == "unscored" and "generation rejected" in rows[("d", "api")]["error"]
    assert rows[("a", "api")]["status"] == "ok"
    records = [json.loads(x) for x in (tmp_path / "out" / "outputs" / "api.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok", "ok", "error", "ok"]


def _joint_logprob(model_dir: Path, context: str, text: str) -> tuple[float, float, int]:
    """Independent: context and text tokenized at once (as a server reads its prompt); the tokens that begin
    inside ``text`` labelled, the rest masked. (HF's mean loss, summed log-probability, token count)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    enc = tok(context + text, return_offsets_mapping=True)
    ids = torch.tensor([enc["input_ids"]])
    labels = ids.clone()
    for k, (start, _) in enumerate(enc["offset_mapping"]):
        if start < len(context):
            labels[0, k] = -100
    n = int((labels[0, 1:] != -100).sum())
    with torch.no_grad():
        loss = float(model(input_ids=ids, labels=labels).loss)
    return loss, -loss * n, n


def test_served_model_loss_and_choice_accuracy_read_echoed_prompt_logprobs(models, tmp_path, capsys):
    from judge.eval.run import evaluate
    from judge.testing.echo import EchoLogprobs
    from judge.testing.server import LoopbackServer

    questions = [
        {
            "id": f"q{i}",
            "question": f"Question {i}: the quick brown fox jumps over the",
            "answer": i % 2,
            "choices": ["lazy dog", "Paris", "fox"][: 2 + i % 2],
        }
        for i in range(5)
    ]
    _write(tmp_path / "mc.jsonl", questions)
    _write(tmp_path / "items.jsonl", ITEMS)
    served = models["checkpoint-a"]
    with LoopbackServer(completions=EchoLogprobs(served)) as srv:
        suite = {
            "data": "items.jsonl",
            "systems": {
                "base": {"model": f"local/{models['base']}"},
                "api": {"model": "openai/served", "base_url": srv.base_url},
            },
            "generate": {"system_prompt": "Answer briefly."},
            "metrics": ["loss", {"metric": "choice_accuracy", "data": "mc.jsonl", "name": "mc", "batch_size": 3}],
            "bootstrap": 200,
            "permutations": 200,
        }
        result = evaluate(suite, base_dir=tmp_path)
        sent = list(srv.requests)
        again = evaluate(suite, base_dir=tmp_path)  # a rerun: losses and choices from the cache
        resent = srv.requests[len(sent) :]
    assert resent == []  # (the probe is remembered for the process; a new process would send it alone)
    assert again.scores == result.scores
    # one probe, then the items' texts in requests of 8 and the choices in requests of 3, all echoed
    assert all(r["echo"] is True and r["logprobs"] == 1 and r["model"] == "served" for r in sent)
    assert sum(len(r["prompt"]) for r in sent) == 1 + 4 + sum(len(q["choices"]) for q in questions)
    rows = {(r["id"], r["system"], r["metric"]): r for r in result.scores}
    nll = tokens = 0.0
    for item in ITEMS:
        got = rows[(item["id"], "api", "loss")]
        if item["reference"] is None:
            assert got["status"] == "unscored" and "no reference" in got["error"]
            continue
        want, logprob, n = _joint_logprob(served, f"Answer briefly.\n\n{item['input']}\n\n", item["reference"])
        assert got["score"] == pytest.approx(want, abs=1e-4)
        nll, tokens = nll - logprob, tokens + n
    assert result.systems["api"]["loss"]["value"] == pytest.approx(nll / tokens, abs=1e-4)  # token-weighted
    assert result.deltas["api"]["loss"]["n_pairs"] == 4
    for q in questions:
        context = q["question"]
        ll = [_joint_logprob(served, context, f" {c}")[1] for c in q["choices"]]
        assert rows[(q["id"], "api", "mc")]["score"] == float(int(np.argmax(ll)) == q["answer"])

    # a server that gives no prompt log-probabilities is refused before anything runs: exit 2, nothing written
    for label, server, message in (
        ("llama.cpp-like", LoopbackServer(completions=EchoLogprobs(served, generated_only=True)), "does not echo"),
        ("chat only", LoopbackServer(), "404"),
    ):
        with server as srv:
            suite["systems"]["api"]["base_url"] = srv.base_url
            suite["metrics"] = ["loss"]
            (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
            out = tmp_path / f"out-{label}"
            code, _, err = judge_cli(capsys, "eval", str(tmp_path / "suite.yaml"), "--out", str(out))
        assert code == 2, (label, err)
        assert "prompt logprobs" in err and message in err and "suite.yaml:" in err, (label, err)
        assert not out.exists(), label


def test_lora_adapter_unmerged_equals_merged_and_another_base_is_refused(models, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from judge.eval.run import evaluate
    from judge.local.models import adapter_mismatch

    base = AutoModelForCausalLM.from_pretrained(str(models["base"]))
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    torch.manual_seed(0)
    lora = peft.get_peft_model(base, config)
    lora.save_pretrained(str(tmp_path / "adapter"))
    merged = lora.merge_and_unload()
    merged.save_pretrained(str(tmp_path / "merged"))
    AutoTokenizer.from_pretrained(str(models["base"])).save_pretrained(str(tmp_path / "merged"))

    _write(tmp_path / "items.jsonl", ITEMS)
    suite = {
        "data": "items.jsonl",
        "systems": {
            "base": {"model": f"local/{models['base']}"},
            "lora": {"model": f"local/{models['base']}", "adapter": "adapter"},
            "merged": {"model": "local/merged"},
        },
        "generate": {"max_new_tokens": 6},
        "metrics": ["loss", "token_f1"],
        "bootstrap": 200,
        "permutations": 200,
    }
    result = evaluate(suite, base_dir=tmp_path, out=tmp_path / "out")
    lora_loss = [r["score"] for r in result.scores if r["system"] == "lora" and r["metric"] == "loss"]
    merged_loss = [r["score"] for r in result.scores if r["system"] == "merged" and r["metric"] == "loss"]
    base_loss = [r["score"] for r in result.scores if r["system"] == "base" and r["metric"] == "loss"]
    assert np.allclose(np.array(lora_loss, float), np.array(merged_loss, float), atol=1e-4, equal_nan=True)
    assert not np.allclose(np.array(lora_loss, float), np.array(base_loss, float), atol=1e-3, equal_nan=True)

    def read(system: str) -> list[str]:
        lines = (tmp_path / "out" / "outputs" / f"{system}.jsonl").read_text().splitlines()
        return [json.loads(x)["output"] for x in lines]

    assert read("lora") == read("merged")
    # an adapter trained on a model of other widths does not apply to this base
    other = tiny_causal_lm(tmp_path / "wide", seed=0, hidden_size=48)
    wide = peft.get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(other)), peft.LoraConfig(r=2, target_modules=["q_proj"])
    )
    wide.save_pretrained(str(tmp_path / "wide-adapter"))
    assert "wide" in (adapter_mismatch(str(tmp_path / "wide-adapter"), str(models["base"])) or "")


def test_judge_callback_logs_the_suite_during_training(models, tmp_path):
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from judge.integrations.transformers import JudgeCallback, evaluate_model

    folder = tmp_path / "start"
    tiny_causal_lm(folder, seed=3)
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    _write(tmp_path / "items.jsonl", ITEMS)
    _write(tmp_path / "mc.jsonl", [{"question": "the quick brown", "choices": ["fox", "dog"], "answer": 0}] * 3)
    suite = {
        "data": "items.jsonl",
        "systems": {"a": "items.jsonl", "b": "items.jsonl"},  # ignored by the callback: the model is the system
        "metrics": ["loss", {"metric": "choice_accuracy", "data": "mc.jsonl", "name": "mc"}, "token_f1"],
        "bootstrap": 200,
    }
    text = ["The quick brown fox jumps over the lazy dog."] * 8
    enc = [tok(t)["input_ids"] for t in text]
    train = [{"input_ids": ids, "labels": ids, "attention_mask": [1] * len(ids)} for ids in enc]
    callback = JudgeCallback(suite, base_dir=tmp_path, out=tmp_path / "judge")
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train, eval_dataset=train[:2], processing_class=tok, callbacks=[callback]
    )
    callback.bind(trainer)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "judge/loss" in h]
    assert [h["step"] for h in logged] == [2, 4]
    assert logged[0]["judge/loss"] != logged[1]["judge/loss"]  # the model moved between evaluations
    model.train()
    final = evaluate_model(model, tok, suite, base_dir=tmp_path)
    assert model.training  # train mode restored after the metrics ran in eval mode
    assert logged[1]["judge/loss"] == pytest.approx(final["loss"]["value"], rel=1e-6)
    assert "judge/mc" in logged[1] and "judge/token_f1" not in logged[1]
    history = json.loads((tmp_path / "judge" / "judge_history.json").read_text())
    assert [h["step"] for h in history] == [2, 4]


@pytest.mark.slow
def test_generation_killed_with_sigkill_resumes_without_generating_anything_twice(models, tmp_path):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    items = [{"id": f"i{k}", "input": f"Question {k}: the quick brown fox {'jumps ' * (k % 7)}?"} for k in range(96)]
    _write(tmp_path / "items.jsonl", items)
    _write(tmp_path / "other.jsonl", [{"id": it["id"], "output": "fox"} for it in items])
    suite = {
        "data": "items.jsonl",
        "systems": {"other": "other.jsonl", "tuned": {"model": f"local/{models['checkpoint-a']}"}},
        "generate": {"max_new_tokens": 24},
        "metrics": ["self_bleu"],
        "bootstrap": 100,
        "permutations": 100,
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    env = {**os.environ, "JUDGE_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "judge", "eval", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "out")]
    db = tmp_path / "cache" / "calls.sqlite"

    def generated() -> int:
        if not db.exists():
            return 0
        with sqlite3.connect(db) as con:
            return int(con.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while generated() < 24 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = generated()
    assert 24 <= done < len(items), done  # killed mid-generation, with answers already kept
    assert not (tmp_path / "out" / "results.json").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    records = [json.loads(x) for x in (tmp_path / "out" / "outputs" / "tuned.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [it["id"] for it in items]  # nothing lost
    assert sum(r["cached"] for r in records) == done  # nothing generated twice: every kept answer was reused
    assert generated() == len(items)
