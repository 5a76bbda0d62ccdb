"""MT-Bench pairwise with a local judge in logprob mode: both orders' label probabilities, averaged.

The fast test runs ``judge mtbench judge`` on a tiny random model and recomputes every order's label
probabilities from the model's own logits (one plain forward pass per label), then the
position-debiased average, independently of the provider and of :mod:`judge.orders`. The slow test
judges real MT-Bench pairs with SmolLM2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from judge import load_rubric
from judge.errors import ConfigError
from judge.orders import combine_order_probs, mean_order_probs
from tests.test_mtbench import invoke, ok, rows

pytest.importorskip("torch")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_bench"
LABELS = ("A", "B", "tie")
QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["Name a red fruit.", "And a blue one?"]},
    {"question_id": 2, "category": "stem", "turns": ["Is the sky big?"]},
]
ANSWERS = {
    "m1": {1: ["An apple.", "A blueberry."], 2: ["Yes, it is big."]},
    "m2": {1: ["The cat sat.", "Paris."], 2: ["No."]},
}


def write_data(tmp_path: Path) -> tuple[Path, Path]:
    q = tmp_path / "question.jsonl"
    q.write_text("".join(json.dumps(x) + "\n" for x in QUESTIONS))
    ans = tmp_path / "model_answer"
    ans.mkdir()
    for model, by_q in ANSWERS.items():
        lines = [
            {"question_id": qid, "model_id": model, "choices": [{"index": 0, "turns": turns}]}
            for qid, turns in by_q.items()
        ]
        (ans / f"{model}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return q, ans


def conversation(user: list[str], replies: list[str], speaker: str) -> str:
    return "\n\n".join(f"### User:\n{u}\n\n### {speaker}:\n{r}" for u, r in zip(user, replies, strict=True))


def direct_label_probs(model_dir: str, messages: list[dict[str, str]]) -> dict[str, float]:
    """P(label | chat prompt) renormalised over the labels: a plain forward pass over prompt + label for each."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    logps = {}
    for label in LABELS:
        c_ids = tok(label, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0].float(), -1)
        logps[label] = sum(float(logp[len(p_ids) - 1 + j, t]) for j, t in enumerate(c_ids))
    # a label that begins a longer one must also end there; "A", "B", "tie" share no prefix on this tokenizer
    ids = {c: tuple(tok(c, add_special_tokens=False)["input_ids"]) for c in LABELS}
    assert not any(a != b and ids[b][: len(ids[a])] == ids[a] for a in LABELS for b in LABELS)
    total = sum(math.exp(v) for v in logps.values())
    return {c: math.exp(v) / total for c, v in logps.items()}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from judge.testing.tiny import tiny_causal_lm

    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"), max_positions=2048))


def test_pairwise_logprob_averages_both_orders_label_probabilities(
    tiny_model: str, tmp_path: Path, monkeypatch
) -> None:
    # a random model spreads its mass over the whole vocabulary: accept any mass on the labels here
    monkeypatch.setattr("judge.verdict.MIN_SCORE_MASS", 0.0)
    q, ans = write_data(tmp_path)
    out = tmp_path / "judged.jsonl"
    args = ["judge", "--questions", str(q), "--answers", str(ans), "--mode", "pairwise-all"]
    printed = ok(invoke(*args, "--judge", f"local/{tiny_model}", "--no-cache", "--out", str(out)))
    assert "score mode logprob" in printed  # the local judge's default
    recs = rows(out)
    assert [(r["question_id"], r["turn"]) for r in recs] == [(1, 1), (1, 2), (2, 1)]
    rubric = load_rubric("mt_bench_pairwise")
    for r in recs:
        assert r["status"] == "ok" and r["score_mode"] == "logprob" and r["completion_tokens"] == 0
        k, qd = r["turn"], next(x for x in QUESTIONS if x["question_id"] == r["question_id"])
        user = qd["turns"][:k]
        a1, a2 = ANSWERS["m1"][r["question_id"]][:k], ANSWERS["m2"][r["question_id"]][:k]
        direct = []
        for first, second, prompt in ((a1, a2, r["g1_user_prompt"]), (a2, a1, r["g2_user_prompt"])):
            values = {
                "conversation_a": conversation(user, first, "Assistant A"),
                "conversation_b": conversation(user, second, "Assistant B"),
                "question": user[-1],
            }
            messages = rubric.render(values, "logprob")
            assert messages[-1]["content"] == prompt
            assert messages[-1]["content"].endswith("Verdict:")  # asks for the bare label
            direct.append(direct_label_probs(tiny_model, messages))
        p1, p2 = direct
        for label in LABELS:  # each order as the judge gave it (positional)
            assert r["g1_probs"][label] == pytest.approx(p1[label], abs=1e-4)
            assert r["g2_probs"][label] == pytest.approx(p2[label], abs=1e-4)
        # position-debiased: model_1 is A in game 1 and B in game 2
        expected = {
            "model_1": (p1["A"] + p2["B"]) / 2,
            "model_2": (p1["B"] + p2["A"]) / 2,
            "tie": (p1["tie"] + p2["tie"]) / 2,
        }
        assert r["probs"] == pytest.approx(expected, abs=1e-4)
        assert r["winner"] == max(expected, key=expected.__getitem__)
        own = {"A": "model_1", "B": "model_2", "tie": "tie"}
        assert r["g1_winner"] == own[max(p1, key=p1.__getitem__)]
        assert r["g2_winner"] == {"A": "model_2", "B": "model_1", "tie": "tie"}[max(p2, key=p2.__getitem__)]
        assert r["consistent"] == (r["g1_winner"] == r["g2_winner"])

    # text mode on the same judge keeps MT-Bench's rule (and writes its verdicts)
    out_text = tmp_path / "text.jsonl"
    invoke(*args, "--judge", f"local/{tiny_model}", "--no-cache", "--score-mode", "text", "--max-tokens", "4",
           "--out", str(out_text))  # fmt: skip
    assert all(r["score_mode"] == "text" and r["probs"] is None for r in rows(out_text))


def test_mean_order_probs_in_the_pairs_orientation() -> None:
    first, second = {"A": 0.7, "B": 0.2, "tie": 0.1}, {"A": 0.6, "B": 0.3, "tie": 0.1}
    mean = mean_order_probs(first, second)
    assert mean == pytest.approx({"A": (0.7 + 0.3) / 2, "B": (0.2 + 0.6) / 2, "tie": 0.1})
    # a judge that always prefers the first position, more so when the second answer is shown first:
    # MT-Bench's rule would call it a tie; the averaged probabilities pick the second answer
    combined = combine_order_probs({"A": 0.9, "B": 0.1}, {"A": 0.95, "B": 0.05})
    assert combined.winner == "B" and combined.consistent is False  # (0.9 + 0.05) / 2 < (0.1 + 0.95) / 2
    assert combine_order_probs(first, None) == (None, None)


def test_fastchat_prompts_cannot_be_read_as_label_probabilities(tmp_path: Path) -> None:
    q, ans = write_data(tmp_path)
    prompts = DATA / "judge_prompts.jsonl"
    if not prompts.exists():
        pytest.skip("FastChat judge prompts not found")
    res = invoke(
        "judge", "--questions", str(q), "--answers", str(ans), "--mode", "pairwise-all", "--judge", "fake/x",
        "--judge-prompts", str(prompts), "--score-mode", "logprob", "--no-cache", "--out", str(tmp_path / "o.jsonl"),
    )  # fmt: skip
    assert isinstance(res.exception, ConfigError) or "judge-prompts" in res.output
    assert "explanation" in (str(res.exception) + res.output)


@pytest.mark.slow
def test_smollm2_judges_real_mtbench_pairs_from_label_probabilities(tmp_path: Path) -> None:
    from judge.local.models import resolve_model

    try:
        resolve_model("smollm2")
    except Exception as exc:  # noqa: BLE001 - no weights here: nothing to run
        pytest.skip(f"local smollm2 not available: {exc}")
    if not (DATA / "question.jsonl").exists():
        pytest.skip("real MT-Bench data not found")
    out = tmp_path / "judged.jsonl"
    ok(
        invoke(
            "judge", "--questions", str(DATA / "question.jsonl"), "--answers", str(DATA / "model_answer"),
            "--models", "llama-13b,vicuna-13b-v1.3", "--mode", "pairwise-all", "--question-ids", "81,111",
            "--reference", str(DATA / "reference_answer" / "gpt-4.jsonl"), "--judge", "local/smollm2",
            "--no-cache", "--concurrency", "1", "--out", str(out),
        )
    )  # fmt: skip
    recs = rows(out)
    assert len(recs) == 4  # two questions (writing; math, reference-guided), both turns
    assert sum(r["status"] != "ok" for r in recs) == 0
    for r in recs:
        assert r["score_mode"] == "logprob" and r["completion_tokens"] == 0
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["winner"] == max(r["probs"], key=r["probs"].__getitem__)
