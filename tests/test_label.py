"""``judge label plan`` and ``judge label page``: which items to label, and the page to label them in.

The page is tested in real headless Chromium (the report's fixture): label items with the keyboard, reload,
export, and read the CSV back with calibration's own loader.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibration.labels import load_human_labels
from tests.test_bad_inputs import run_cli
from tests.test_report import XSS, browser, open_report  # noqa: F401 -- browser is a fixture

SCORES = [1, 1, 2, 3, 3, 3, 4, 4, 5, 5]


def _verdicts(tmp: Path, n: int = 300, *, probs: bool = False, rubric: str = "relevance") -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    verdicts, items = tmp / "v.jsonl", tmp / "items.jsonl"
    with verdicts.open("w") as v, items.open("w") as it:
        for i in range(n):
            score = int(SCORES[i % len(SCORES)])
            row: dict[str, Any] = {"id": f"q{i}", "rubric": rubric, "score": score, "status": "ok"}
            row["reasoning"] = f"judge says {score} for q{i}"
            if probs:
                p = rng.dirichlet(np.ones(5) * (0.3 if i % 3 else 3.0))
                row["score_probs"] = {str(k + 1): float(x) for k, x in enumerate(p)}
            v.write(json.dumps(row) + "\n")
            text = {"id": f"q{i}", "input": f"question {i} {XSS[i % 3]}", "output": f"answer {i} {XSS[(i + 1) % 3]}"}
            if rubric == "pairwise":
                text["output_b"] = f"other answer {i}"
            it.write(json.dumps(text) + "\n")
    return verdicts, items


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_plan_is_seeded_stratified_and_records_its_weights(tmp_path: Path, capsys) -> None:
    verdicts, items = _verdicts(tmp_path)
    out, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    base = ["label", "plan", str(verdicts), "--n", "40", "--items", str(items)]
    assert run_cli([*base, "--out", str(out)], capsys)[0] == 0
    assert run_cli([*base, "--out", str(again)], capsys)[0] == 0
    assert run_cli([*base, "--seed", "1", "--out", str(other)], capsys)[0] == 0
    rows = _read(out)
    assert rows == _read(again)  # the same seed, the same plan
    assert {r["id"] for r in rows} != {r["id"] for r in _read(other)}
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    # strata are the five score levels; proportional allocation: pool share x 40, recomputed here
    pool = {f"q{i}": SCORES[i % len(SCORES)] for i in range(300)}
    sizes = {s: sum(1 for v in pool.values() if v == s) for s in range(1, 6)}
    got = {s: sum(1 for r in rows if r["judge"] == s) for s in range(1, 6)}
    assert got == {s: round(40 * sizes[s] / 300) for s in range(1, 6)}
    for r in rows:
        assert r["judge"] == pool[r["id"]]
        assert r["stratum_size"] == sizes[r["judge"]] and r["stratum_labelled"] == got[r["judge"]]
        assert r["weight"] == pytest.approx(sizes[r["judge"]] / got[r["judge"]])
        assert r["input"].startswith(f"question {r['id'][1:]} ") and r["rubric"] == "relevance"
    # the weights add up to the pool: each labelled item stands for weight items
    assert sum(r["weight"] for r in rows) == pytest.approx(300)


def test_uncertainty_plan_puts_more_labels_where_the_judge_is_unsure(tmp_path: Path, capsys) -> None:
    verdicts, _ = _verdicts(tmp_path, probs=True)
    out = tmp_path / "plan.jsonl"
    code, text = run_cli(
        ["label", "plan", str(verdicts), "--n", "60", "--strategy", "uncertainty", "--out", str(out)], capsys
    )
    assert code == 0, text
    rows = _read(out)
    # the judge's uncertainty per item, recomputed: the standard deviation of its score distribution
    unc = {}
    for line in verdicts.read_text().splitlines():
        v = json.loads(line)
        k = np.array([float(x) for x in v["score_probs"]])
        p = np.array(list(v["score_probs"].values()))
        unc[v["id"]] = float(np.sqrt((p * (k - (p * k).sum()) ** 2).sum()))
    picked = np.mean([unc[r["id"]] for r in rows])
    assert picked > np.mean(list(unc.values()))  # labels go where the judge is unsure
    assert sum(r["weight"] for r in rows) == pytest.approx(300)
    assert all(r["stratify_on"] == "uncertainty" for r in rows)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "301"], "a plan of 301 items is larger than the pool: the judge scored 300 items"),
        (["--n", "20", "--strategy", "uncertainty"], "needs the judge's score_probs"),
        (["--n", "4"], "5 strata need at least 2 labels each"),
    ],
)
def test_bad_plans_exit_2_and_write_nothing(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    verdicts, _ = _verdicts(tmp_path)
    out = tmp_path / "plan.jsonl"
    code, text = run_cli(["label", "plan", str(verdicts), *extra, "--out", str(out)], capsys)
    assert code == 2, text
    assert message in text and "Traceback" not in text
    assert not out.exists()


# -------------------------------------------------------------------------------------------- the page


def _page(tmp: Path, capsys, *, rubric: str = "relevance", blind: bool = False) -> Path:
    verdicts, items = _verdicts(tmp, n=40, rubric=rubric)
    plan, page = tmp / "plan.jsonl", tmp / "label.html"
    assert (
        run_cli(["label", "plan", str(verdicts), "--n", "12", "--items", str(items), "--out", str(plan)], capsys)[0]
        == 0
    )
    argv = ["label", "page", str(plan), "--out", str(page), "--annotator", 'ana,"x"']
    code, text = run_cli(argv + (["--blind"] if blind else []), capsys)
    assert code == 0, text
    return page


PAGE_HAS_FOCUS = "return document.hasFocus() && !['INPUT', 'TEXTAREA'].includes(document.activeElement.tagName)"


def _keys(driver: Any, *keys: str) -> None:
    """Press keys through Chromium's input pipeline (CDP Input.dispatchKeyEvent), as a keyboard does."""
    # a freshly started headless window may not hold the input focus yet: keys would go nowhere
    driver.execute_cdp_cmd("Page.bringToFront", {})
    driver.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})
    driver.find_element("tag name", "header").click()  # the page, not a text field, has the focus
    # on a loaded machine the focus arrives late: the first keys would go nowhere
    assert _until(lambda: driver.execute_script(PAGE_HAS_FOCUS))
    named = {"n": "KeyN", "p": "KeyP", "a": "KeyA", "b": "KeyB", "t": "KeyT"}
    for k in keys:
        code = named.get(k, f"Digit{k}")
        driver.execute_cdp_cmd("Input.dispatchKeyEvent", {"type": "keyDown", "key": k, "code": code, "text": k})
        driver.execute_cdp_cmd("Input.dispatchKeyEvent", {"type": "keyUp", "key": k, "code": code})


def _until(check: Any, timeout: float = 15.0) -> Any:
    """Poll ``check()`` until it returns something truthy (a loaded machine runs the page slowly)."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > end:
            return got
        time.sleep(0.05)


def _text(driver: Any) -> str:
    return driver.execute_script("return document.querySelector('main').innerText")  # what is shown


def test_label_page_in_chromium_keyboard_reload_export(tmp_path: Path, capsys, browser: Any) -> None:  # noqa: F811
    page = _page(tmp_path, capsys)
    plan = _read(tmp_path / "plan.jsonl")
    download = tmp_path / "downloads"
    download.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download)})
    open_report(browser, page)
    browser.execute_script("localStorage.clear()")
    open_report(browser, page)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    # every text is shown as text: the XSS strings are visible, none of them ran or built an element
    assert any(x in _text(browser) for x in XSS)
    assert browser.execute_script("return window.__dialogs") == []
    assert browser.execute_script("return document.querySelectorAll('#pwn, img, iframe').length") == 0
    assert browser.execute_script("return document.getElementById('item-id').textContent") == plan[0]["id"]
    assert f"judge says {int(plan[0]['judge'])} for {plan[0]['id']}" in _text(
        browser
    )  # not blind: the judge's verdict is shown
    _keys(browser, "4", "2")  # label the first two items
    assert _until(lambda: "2 of 12 labelled" in _text(browser)), _text(browser)
    browser.find_element("id", "note").send_keys("unsure, see the reference")
    _keys(browser, "5", "n", "1")  # label item 3, skip item 4, label item 5
    assert _until(lambda: "4 of 12 labelled" in _text(browser)), _text(browser)

    open_report(browser, page)  # a reload loses nothing
    assert _until(lambda: "4 of 12 labelled" in _text(browser)), _text(browser)
    browser.find_element("id", "export").click()
    exported = _until(lambda: browser.execute_script("return document.getElementById('csv').value"))
    files = _until(lambda: [f for f in download.glob("labels*.csv") if f.read_text() == exported])
    assert files, list(download.iterdir())  # the download is the same CSV
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert list(rows[0]) == ["id", "annotator", "label", "seconds", "order", "note"]
    got = {r["id"]: r for r in rows}
    expect = {plan[0]["id"]: "4", plan[1]["id"]: "2", plan[2]["id"]: "5", plan[4]["id"]: "1"}
    assert {i: r["label"] for i, r in got.items()} == expect
    assert got[plan[2]["id"]]["note"] == "unsure, see the reference"
    assert all(r["annotator"] == 'ana,"x"' for r in rows)  # quoted, read back intact
    assert all(float(r["seconds"]) >= 0 for r in rows)
    # judge calibrate reads it as it is
    labels, kind = load_human_labels(files[0], scale=(1, 5))
    assert kind == "ordinal" and dict(zip(labels["id"], labels["label"], strict=True)) == {
        k: float(v) for k, v in expect.items()
    }


def test_pairwise_page_records_the_shown_order_and_exports_a_b(tmp_path: Path, capsys, browser: Any) -> None:  # noqa: F811
    page = _page(tmp_path, capsys, rubric="pairwise", blind=True)
    plan = _read(tmp_path / "plan.jsonl")
    html = page.read_text()
    assert "judge says" not in html  # blind: the judge's verdicts are not in the page at all
    open_report(browser, page)
    browser.execute_script("localStorage.clear()")
    open_report(browser, page)
    shown = []
    for n, k in enumerate(("a", "b", "t", "1")):
        assert _until(lambda n=n: f"{n} of 12 labelled" in _text(browser)), _text(browser)
        left = browser.execute_script("return document.querySelectorAll('.pair pre')[0].textContent")
        shown.append(left)
        _keys(browser, k)
    assert _until(lambda: "4 of 12 labelled" in _text(browser)), _text(browser)
    browser.find_element("id", "export").click()
    exported = _until(lambda: browser.execute_script("return document.getElementById('csv').value"))
    rows = list(csv.DictReader(io.StringIO(exported)))
    by_id = {r["id"]: r for r in rows}
    for item, key, left in zip(plan[:4], ("a", "b", "t", "1"), shown, strict=True):
        r = by_id[item["id"]]
        a_on_left = left.startswith("answer ")  # output (A) was shown on the left
        assert r["order"] == ("AB" if a_on_left else "BA")
        if key == "t":
            assert r["label"] == "tie"
        else:
            chose_left = key in ("a", "1")
            assert r["label"] == ("A" if chose_left == a_on_left else "B")
    orders = {r["order"] for r in rows}
    assert orders <= {"AB", "BA"}


def test_page_refuses_a_plan_without_a_rubric_or_texts(tmp_path: Path, capsys) -> None:
    plan = tmp_path / "plan.jsonl"
    plan.write_text(json.dumps({"id": "x1", "output": "a"}) + "\n")
    out = tmp_path / "label.html"
    code, text = run_cli(["label", "page", str(plan), "--out", str(out)], capsys)
    assert code == 2 and "pass --rubric" in text and not out.exists()
    code, text = run_cli(["label", "page", str(plan), "--out", str(out), "--rubric", "pairwise"], capsys)
    assert code == 2 and f"{plan}:1" in text and "needs both answers" in text and not out.exists()


# -------------------------------------------------------------------------------------------- plan -> PPI


def test_stratified_plan_keeps_the_estimate_unbiased() -> None:
    """Labels drawn where the judge is unsure oversample the items it gets wrong: an estimate that ignored the
    plan's weights would be biased; the stratified PPI estimate is not, and its interval covers."""
    import pandas as pd

    from calibration.plan import plan
    from judge.ppi import ppi_mean

    rng = np.random.default_rng(0)
    n_pool = 1500
    unsure = rng.random(n_pool)
    judge = rng.integers(1, 6, n_pool).astype(float)
    human = judge - 1.5 * unsure + rng.normal(0, 0.3, n_pool)  # the judge is harsher where it is unsure
    truth = human.mean()
    frame = pd.DataFrame(
        {"id": [f"i{k}" for k in range(n_pool)], "score": judge, "value": judge, "uncertainty": unsure}
    )
    estimates, naive, hits = [], [], 0
    for seed in range(200):
        picked = plan(frame, 120, strategy="uncertainty", seed=seed)
        lab = picked["id"].str[1:].astype(int).to_numpy()
        is_lab = np.zeros(n_pool, bool)
        is_lab[lab] = True
        strata = np.searchsorted(picked["edges"].iloc[0], unsure, side="right")
        out = ppi_mean(human[lab], judge[lab], judge[~is_lab], strata=strata[lab], strata_unlabelled=strata[~is_lab])
        estimates.append(out.ppi.value)
        hits += out.ppi.ci_low <= truth <= out.ppi.ci_high
        naive.append(ppi_mean(human[lab], judge[lab], judge[~is_lab]).ppi.value)
    se = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - truth) < 3 * se
    assert abs(np.mean(naive) - truth) > 10 * se  # ignoring the plan: biased
    assert hits / 200 >= 0.9


def test_calibrate_with_the_plan_gives_the_stratified_estimate(tmp_path: Path, capsys) -> None:
    verdicts, _ = _verdicts(tmp_path)
    plan = tmp_path / "plan.jsonl"
    assert run_cli(["label", "plan", str(verdicts), "--n", "40", "--out", str(plan)], capsys)[0] == 0
    planned = _read(plan)
    judge = {f"q{i}": float(SCORES[i % len(SCORES)]) for i in range(300)}
    human = {k: min(5.0, max(1.0, v - 1 + (int(k[1:]) % 3))) for k, v in judge.items()}
    labels = tmp_path / "labels.csv"
    labels.write_text("id,annotator,label\n" + "".join(f"{r['id']},ana,{human[r['id']]}\n" for r in planned))
    out = tmp_path / "r.json"
    argv = ["calibrate", "--judge", str(verdicts), "--human", str(labels), "--bootstrap", "0", "--json", str(out)]
    code, text = run_cli([*argv, "--plan", str(plan)], capsys)
    assert code == 0, text
    ppi = json.loads(out.read_text())["ppi"]
    assert ppi["n_strata"] == 5 and "5 sampling strata" in text
    # the stratified estimate, recomputed from the files with the reported lambda
    lam, lab = ppi["lam"], {r["id"] for r in planned}
    value = 0.0
    for s in range(1, 6):
        in_s = [k for k, v in judge.items() if v == s]
        y = np.array([human[k] for k in in_s if k in lab])
        f = np.array([judge[k] for k in in_s if k in lab])
        fu = np.array([judge[k] for k in in_s if k not in lab])
        value += len(in_s) / 300 * (lam * fu.mean() + (y - lam * f).mean())
    assert ppi["ppi"]["value"] == pytest.approx(value)
    # a label for an item outside the plan breaks its weights: exit 2, nothing written
    out.unlink()
    stray = next(k for k in judge if k not in lab)
    labels.write_text(labels.read_text() + f"{stray},ana,3\n")
    code, text = run_cli([*argv, "--plan", str(plan)], capsys)
    assert code == 2 and "1 labelled item(s) are not in the plan" in text and stray in text
    assert not out.exists()
