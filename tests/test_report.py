"""judge report: one self-contained HTML file per kind of result, checked as text and in headless Chromium.

The browser tests need Debian's chromium and chromium-driver (``make test`` and ``.ci/run`` install them
as root); without them they are skipped with the reason. Each kind is loaded from a file:// URL, and the
test checks: no console error, plots and tables present, the review queue holds the expected ids, the
XSS strings show as text and run nothing, and no request leaves the page. Screenshots land in tmp_path.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

import judge
from judge.cli import main
from judge.textfmt import fmt
from judge.verdict import Verdict

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
XSS = ['<script>alert("x1")</script>', "<img src=x onerror=\"alert('x2')\">", '</textarea><b id="pwn">x3</b>']
EVIL_MODEL = "vicuna<img src=x onerror=\"alert('m')\">"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def make_verdicts(tmp: Path) -> tuple[Path, Path, set[str]]:
    """60 verdicts (every 13th unscored), scores i % 5 + 1: the twelve items scored 1 head the queue."""
    items, verdicts = [], []
    for i in range(60):
        items.append(
            {"id": f"v{i}", "input": f"question {i} {XSS[(i + 1) % 3]}", "output": "word " * (i + 2) + XSS[i % 3]}
        )
        ok = i % 13 != 5
        verdicts.append(
            Verdict(
                id=f"v{i}",
                rubric="factuality",
                rubric_hash="abc123def456",
                judge_model="fake/echo-score",
                score_mode="text",
                score=float(i % 5 + 1) if ok else None,
                status="ok" if ok else "unscored",
                reasoning="because " + XSS[i % 3],
                raw='{"score": 1} ' + XSS[(i + 2) % 3],
                error=None if ok else "could not read a score",
                prompt_tokens=100,
                completion_tokens=20,
            ).model_dump(mode="json")
        )
    lowest = {f"v{i}" for i in range(60) if i % 5 == 0 and i % 13 != 5}
    return _write_jsonl(tmp / "qa.verdicts.jsonl", verdicts), _write_jsonl(tmp / "qa.jsonl", items), lowest


def make_eval(tmp: Path, without_reference: int = 0) -> tuple[Path, set[str]]:
    """A two-system run with reference metrics; e7 is the tuned system's worst item and its largest drop.
    The first ``without_reference`` items get a blank reference."""
    items, base, tuned = [], [], []
    for i in range(30):
        ref = f"the answer to question {i} is number {i} and it is right"
        items.append({"id": f"e{i}", "input": f"q{i} {XSS[i % 3]}", "reference": "" if i < without_reference else ref})
        base.append({"id": f"e{i}", "output": ref if i == 7 else f"the answer is number {i} " + XSS[i % 3]})
        tuned.append({"id": f"e{i}", "output": "zzz " + XSS[i % 3] if i == 7 else ref[: 10 + i] + " " + XSS[i % 3]})
    _write_jsonl(tmp / "items.jsonl", items)
    _write_jsonl(tmp / "base.jsonl", base)
    _write_jsonl(tmp / "tuned.jsonl", tuned)
    suite = {
        "name": "report-test",
        "data": "items.jsonl",
        "systems": {"base": "base.jsonl", "tuned": "tuned.jsonl"},
        "baseline": "base",
        "metrics": ["token_f1", "chrf"],
        "bootstrap": 200,
        "permutations": 200,
        "review": 5,
        "gates": [{"metric": "token_f1", "delta_min": 0}, {"metric": "chrf", "system": "tuned", "min": 1}],
    }
    out = tmp / "eval-out"
    judge.evaluate(suite, base_dir=tmp, out=out)
    return out, {"e7"}


def make_calibration(tmp: Path) -> tuple[Path, set[str]]:
    """Ordinal judge scores vs two annotators; c3 (judge 5, humans 1) is the largest disagreement."""
    import pandas as pd

    from calibration import calibrate

    ids = [f"c{i}" for i in range(40)]
    human = [1 + i % 5 for i in range(40)]
    scores = [5 if i == 3 else min(5, h + (i % 7 == 0)) for i, h in enumerate(human)]
    frame = pd.DataFrame({"id": ids, "score": scores, "output": [f"answer {i} {XSS[i % 3]}" for i in range(40)]})
    labels = pd.DataFrame(
        {
            "id": ids * 2,
            "annotator": ["h1"] * 40 + ["h2"] * 40,
            "label": human + [min(5, h + i % 2) for i, h in enumerate(human)],
        }
    )
    report = calibrate(frame, labels, label_type="ordinal", n_boot=200, n_disagreements=5)
    path = tmp / "calibration.json"
    path.write_text(json.dumps(report.to_dict()), encoding="utf-8")
    return path, {"c3"}


def make_binary_calibration(tmp: Path) -> tuple[Path, set[str]]:
    """Probability-like judge scores vs binary labels; b5 (judge 0.98, humans 0) is the largest disagreement."""
    import pandas as pd

    from calibration import calibrate

    ids = [f"b{i}" for i in range(50)]
    prob = [round((i * 0.37) % 1, 3) for i in range(50)]
    prob[5] = 0.98
    human = [int(p > 0.5) if i % 6 else int(p <= 0.5) for i, p in enumerate(prob)]
    human[5] = 0
    frame = pd.DataFrame({"id": ids, "score": prob, "output": [f"answer {i} {XSS[i % 3]}" for i in range(50)]})
    labels = pd.DataFrame({"id": ids, "annotator": "h1", "label": human})
    report = calibrate(frame, labels, label_type="binary", n_boot=200, n_disagreements=5)
    path = tmp / "calibration-binary.json"
    path.write_text(json.dumps(report.to_dict()), encoding="utf-8")
    return path, {"b5"}


def make_continuous_calibration(tmp: Path) -> tuple[Path, list[tuple[float, float]]]:
    """Continuous judge scores (as a local or logprob judge gives) vs one annotator's 1-5 labels; returns the
    (judge, human) pairs."""
    import pandas as pd

    from calibration import calibrate

    ids = [f"k{i}" for i in range(60)]
    human = [1 + i % 5 for i in range(60)]
    scores = [round(h + ((i * 0.37) % 1 - 0.5) * 1.6, 3) for i, h in enumerate(human)]
    frame = pd.DataFrame({"id": ids, "score": scores, "output": [f"answer {i} {XSS[i % 3]}" for i in range(60)]})
    labels = pd.DataFrame({"id": ids, "annotator": "h1", "label": human})
    report = calibrate(frame, labels, label_type="ordinal", n_boot=100, n_disagreements=5)
    path = tmp / "calibration-continuous.json"
    path.write_text(json.dumps(report.to_dict()), encoding="utf-8")
    return path, list(zip(map(float, scores), map(float, human), strict=True))


def make_mtbench(tmp: Path) -> tuple[Path, Path, set[str]]:
    """Single and pairwise judgments (FastChat-like records); 81:<evil model>:t1 is scored lowest."""
    singles, pairs = [], []
    models = ["llama-13b", EVIL_MODEL]
    for q, cat in ((81, "writing"), (101, "reasoning"), (111, "math"), (121, "coding")):
        for turn in (1, 2):
            for k, m in enumerate(models):
                score = 1 if (q, m, turn) == (81, EVIL_MODEL, 1) else 3 + k * 3 + turn
                singles.append(
                    {
                        "question_id": q,
                        "model": m,
                        "judge": ["gpt-4", "single-v1"],
                        "score": score,
                        "turn": turn,
                        "category": cat,
                        "judgment": f"Rating: [[{score}]] {XSS[q % 3]}",
                        "user_prompt": "judge this",
                        "status": "ok",
                    }
                )
            g1, g2 = ("model_2", "model_2") if q != 101 else ("model_1", "model_2")
            pairs.append(
                {
                    "question_id": q,
                    "model_1": models[0],
                    "model_2": models[1],
                    "g1_winner": g1,
                    "g2_winner": g2,
                    "winner": g1 if g1 == g2 else "tie",
                    "consistent": g1 == g2,
                    "turn": turn,
                    "judge": ["gpt-4", "pair-v2"],
                    "g1_judgment": "[[B]] " + XSS[0],
                    "g2_judgment": "[[A]]",
                    "answer_1_chars": 100,
                    "answer_2_chars": 300,
                    "status": "ok",
                    "category": cat,
                }
            )
    return (
        _write_jsonl(tmp / "judgments_single.jsonl", singles),
        _write_jsonl(tmp / "judgments_pair.jsonl", pairs),
        {f"81:{EVIL_MODEL}:t1"},
    )


# ----------------------------------------------------------------------------------------- no browser


def test_every_kind_escapes_model_text_and_loads_nothing(tmp_path: Path) -> None:
    verdicts, items, _ = make_verdicts(tmp_path)
    single, pair, _ = make_mtbench(tmp_path)
    html = judge.report(verdicts, make_eval(tmp_path)[0], make_calibration(tmp_path)[0], single, pair, items=items)
    for kind in ("verdicts", "eval", "calibration", "mtbench"):
        assert f'data-kind="{kind}"' in html
    assert "<script>alert" not in html and "<img src=x" not in html and '<b id="pwn">' not in html
    assert "&lt;script&gt;alert(&#34;x1&#34;)&lt;/script&gt;" in html and "&lt;/textarea&gt;" in html
    assert html.count("<script") == 1  # the page's own sort/filter script, allowed by its hash in the CSP
    unquoted = re.sub(r'"[^"]*"', '""', html)  # model text may sit (escaped) inside attribute values
    assert re.findall(r"<[a-zA-Z][^>]*\ssrc=", unquoted) == [], "an element that could load something"
    assert all(h.startswith("#") for h in re.findall(r'<a href="([^"]*)"', html))
    for ref in ("url(", "@import", "@font-face"):
        assert ref not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def run_cli(*args: str) -> int:
    """The exit code of ``judge ARGS``."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_report_eval_and_calibrate_flags(tmp_path: Path) -> None:
    verdicts, items, _ = make_verdicts(tmp_path)
    assert run_cli("report", str(verdicts), "--items", str(items), "--out", str(tmp_path / "r.html")) == 0
    assert "Lowest-scoring items" in (tmp_path / "r.html").read_text()
    human = tmp_path / "labels.csv"
    human.write_text("id,label\n" + "".join(f"v{i},{1 + (i * 7) % 5}\n" for i in range(60)))
    assert (
        run_cli(
            "calibrate",
            "--judge",
            str(verdicts),
            "--human",
            str(human),
            "--bootstrap",
            "0",
            "--report",
            str(tmp_path / "cal.html"),
        )
        == 0
    )
    assert 'data-kind="calibration"' in (tmp_path / "cal.html").read_text()
    make_eval(tmp_path)  # writes the items and systems' files
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "data: items.jsonl\nsystems: {base: base.jsonl, tuned: tuned.jsonl}\nbaseline: base\n"
        "metrics: [token_f1]\nbootstrap: 100\npermutations: 100\n"
    )
    code = run_cli("eval", str(suite), "--out", str(tmp_path / "ev"), "--report", str(tmp_path / "ev.html"))
    assert code == 0
    assert "forest plot of deltas" in (tmp_path / "ev.html").read_text()


def test_unknown_input_is_a_data_error(tmp_path: Path) -> None:
    bad = _write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(judge.DataError, match="not a result this report knows"):
        judge.report(bad)


def test_calibration_scatter_for_continuous_scores(tmp_path: Path) -> None:
    path, pairs = make_continuous_calibration(tmp_path)
    report = json.loads(path.read_text())
    assert report["confusion"] is None  # continuous scores: no confusion matrix to jitter
    assert [tuple(p) for p in report["points"]] == pairs  # judge order, one annotator = the consensus
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip").fit([p[0] for p in pairs], [p[1] for p in pairs])
    assert report["isotonic"]["y"] == pytest.approx(list(iso.y_thresholds_))
    html = judge.report(path)
    plot = html.split('aria-label="judge vs human scatter"')[1].split("</svg>")[0]
    assert plot.count("<circle") == len(pairs) and plot.count("<path") == 1
    assert "Judge score (x) vs human consensus (y), one dot per item" in html
    assert "judge values jittered" not in html and "human values jittered" in html  # only whole numbers are


def test_jitter_stays_within_a_third_of_a_unit() -> None:
    from judge.report.calibration import _jitter

    # labels of only 1 and 5 (the README's demo): a 5 must not be drawn at 6.2, nor a 1 below 0
    sparse = [abs(_jitter([1.0, 5.0, 5.0], k, 0.3)) for k in range(200)]
    assert max(sparse) <= 0.35 and max(sparse) > 0.3
    dense = [abs(_jitter([0.0, 0.5, 1.0], k, 0.0)) for k in range(200)]  # not whole numbers: not jittered
    assert max(dense) == 0


def test_reliability_curve_for_binary_calibration_only(tmp_path: Path) -> None:
    binary, ordinal = make_binary_calibration(tmp_path)[0], make_calibration(tmp_path)[0]
    rel = json.loads(binary.read_text())["reliability"]
    assert rel["bins"] and rel["brier"] is not None
    html = judge.report(binary)
    assert 'aria-label="reliability curve"' in html and "Reliability curve" in html
    assert html.count('class="bin"') == len(rel["bins"]) == html.count('class="errorbar"')
    assert 'class="diagonal"' in html and "ECE" in html
    assert json.loads(ordinal.read_text())["reliability"] is None
    assert "reliability curve" not in judge.report(ordinal).lower()


# -------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser() -> Any:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("browser tests need Debian's chromium and chromium-driver (make test installs them as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    # on a closed network Chromium's own background connections fail noisily: switch them off
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield driver
    driver.quit()


def open_report(driver: Any, path: Path) -> None:
    """Load a report with alert/confirm/prompt recorded instead of shown, and the logs emptied first."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")
    hook = (
        "window.__dialogs = []; ['alert','confirm','prompt'].forEach(function (f) { window[f] = function (m) "
        "{ window.__dialogs.push(f + ':' + m); }; });"
    )
    script_id = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": hook})["identifier"]
    try:
        driver.get(path.resolve().as_uri())
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script_id})


def check_page(driver: Any, path: Path, kind: str, expected_ids: set[str], min_plots: int, shot: Path) -> list[str]:
    """The checks every kind shares; returns the review-queue ids of the section."""
    open_report(driver, path)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    requests = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            requests.append(msg["params"]["request"]["url"])
    assert [u for u in requests if not u.startswith(("file:", "data:", "about:"))] == []
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert driver.execute_script("return window.__dialogs") == []
    assert driver.execute_script("return document.scripts.length") == 1
    assert driver.execute_script("return document.querySelectorAll('#pwn, img, iframe, object, embed').length") == 0
    text = driver.execute_script("return document.body.textContent")
    assert '<script>alert("x1")</script>' in text or XSS[1] in text or XSS[2] in text
    sel = f'section[data-kind="{kind}"]'
    assert driver.execute_script(f"return document.querySelectorAll('{sel} svg.plot').length") >= min_plots
    assert driver.execute_script(f"return document.querySelectorAll('{sel} table.stats tbody tr').length") > 0
    ids = driver.execute_script(
        f"return Array.from(document.querySelectorAll('{sel} table.review tbody tr')).map(r => r.dataset.id)"
    )
    assert expected_ids <= set(ids), (expected_ids, ids)
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    png = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": metrics["width"], "height": min(metrics["height"], 6000), "scale": 1},
        },
    )["data"]
    import base64

    shot.write_bytes(base64.b64decode(png))
    assert shot.stat().st_size > 10_000
    return ids


def test_browser_verdicts_report_sorts_and_filters(browser: Any, tmp_path: Path) -> None:
    verdicts, items, lowest = make_verdicts(tmp_path)
    page = tmp_path / "verdicts.html"
    judge.report(verdicts, items=items, out=page)
    check_page(browser, page, "verdicts", lowest, 2, tmp_path / "verdicts.png")
    rows = "Array.from(document.querySelector('table.review').tBodies[0].rows)"
    browser.execute_script("document.querySelectorAll('table.review th[data-col]')[2].click()")  # score, ascending
    browser.execute_script("document.querySelectorAll('table.review th[data-col]')[2].click()")  # descending
    scores = browser.execute_script(f"return {rows}.map(r => parseFloat(r.cells[2].dataset.sort))")
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    browser.execute_script(
        "var i = document.querySelector('input.filter'); i.value = 'v10'; i.dispatchEvent(new Event('input'))"
    )
    assert browser.execute_script(f"return {rows}.filter(r => !r.hidden).map(r => r.dataset.id)") == ["v10"]


def test_browser_eval_report(browser: Any, tmp_path: Path) -> None:
    out, expected = make_eval(tmp_path)
    page = tmp_path / "eval.html"
    judge.report(out, out=page)
    check_page(browser, page, "eval", expected, 3, tmp_path / "eval.png")
    gates = browser.execute_script(
        "return document.querySelectorAll('table.gates td.pass, table.gates td.fail').length"
    )
    assert gates == 2
    # length bias as a grid: metric rows x system columns
    assert browser.execute_script("return document.querySelectorAll('table.length-bias tbody tr').length") == 2
    assert browser.execute_script("return document.querySelectorAll('table.length-bias thead th').length") == 3
    # the answer first: the verdict and the per-system headline above every other table; provenance folded
    sec = "document.querySelector('section[data-kind=eval]')"
    first = browser.execute_script(f"return {sec}.querySelector('table').closest('div.headline') !== null")
    assert first
    assert browser.execute_script(f"return {sec}.querySelector('p.verdict').textContent") == "FAIL: 1 of 2 gates fail."
    cells = browser.execute_script(
        f"return Array.from({sec}.querySelectorAll('table.headline td')).map(c => c.textContent)"
    )
    assert cells[0] == "tuned" and cells[2] == "1 of 2: token_f1" and cells[3].startswith("FAIL")
    assert browser.execute_script(f"return {sec}.querySelector('details.provenance').open") is False
    visible = f"return {sec}.querySelector('table.provenance').checkVisibility({{contentVisibilityAuto: true}})"
    assert browser.execute_script(visible) is False  # folded: not shown until opened
    browser.execute_script(f"{sec}.querySelector('details.provenance').open = true")
    assert browser.execute_script(visible) is True
    # every figure says how to read it
    captions = browser.execute_script(
        f"return Array.from({sec}.querySelectorAll('figure'))"
        ".map(f => (f.querySelector('figcaption') || {}).textContent)"
    )
    assert captions and all(c and len(c) > 40 for c in captions), captions


def test_browser_calibration_report(browser: Any, tmp_path: Path) -> None:
    path, expected = make_calibration(tmp_path)
    page = tmp_path / "calibration.html"
    judge.report(path, out=page)
    check_page(browser, page, "calibration", expected, 2, tmp_path / "calibration.png")
    plots = "Array.from(document.querySelectorAll('section[data-kind=calibration] svg.plot'))"
    curve = f"{plots}.filter(s => s.getAttribute('aria-label') === 'reliability curve')"
    assert browser.execute_script(f"return {curve}.length") == 0  # ordinal labels: no reliability curve
    binary, expected = make_binary_calibration(tmp_path)
    n_bins = len(json.loads(binary.read_text())["reliability"]["bins"])
    page = tmp_path / "calibration-binary.html"
    judge.report(binary, out=page)
    check_page(browser, page, "calibration", expected, 2, tmp_path / "calibration-binary.png")
    assert browser.execute_script(f"return {curve}.length") == 1
    assert browser.execute_script(f"return {curve}[0].querySelectorAll('circle.bin').length") == n_bins
    assert browser.execute_script(f"return {curve}[0].querySelectorAll('line.errorbar').length") == n_bins
    box = browser.execute_script(f"var r = {curve}[0].getBoundingClientRect(); return [r.width, r.height]")
    assert box[0] > 100 and box[1] > 100
    # continuous judge scores: a scatter with the isotonic fit (there was no plot at all); integer scores: the
    # jittered dots stay inside the plot box
    continuous, pairs = make_continuous_calibration(tmp_path)
    for source, n in ((continuous, len(pairs)), (path, 40)):
        page = tmp_path / f"{source.stem}.html"
        judge.report(source, out=page)
        open_report(browser, page)
        scatter = "document.querySelector('section[data-kind=calibration] svg[aria-label=\"judge vs human scatter\"]')"
        assert browser.execute_script(f"return {scatter}.querySelectorAll('circle').length") == n
        assert browser.execute_script(f"return {scatter}.querySelectorAll('path').length") == 1  # the isotonic fit
        spill = browser.execute_script(
            f"var s = {scatter}, b = s.querySelector('rect.box').getBoundingClientRect();"
            "return Array.from(s.querySelectorAll('circle')).map(c => c.getBoundingClientRect())"
            ".filter(r => r.left < b.left || r.right > b.right || r.top < b.top || r.bottom > b.bottom).length"
        )
        assert spill == 0


def test_browser_mtbench_report(browser: Any, tmp_path: Path) -> None:
    single, pair, expected = make_mtbench(tmp_path)
    page = tmp_path / "mtbench.html"
    judge.report(single, pair, out=page)
    check_page(browser, page, "mtbench", expected, 2, tmp_path / "mtbench.png")
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.plot text')).map(t => t.textContent)"
    )
    assert EVIL_MODEL[:16] in labels or any("vicuna<img" in t for t in labels)
    # a model has one colour in the radar and the histogram (the radar orders models by score, so the fixture's
    # second model comes first there)
    plot = "document.querySelector('section[data-kind=mtbench] svg[aria-label=\"{}\"]')"
    radar = browser.execute_script(
        f"return Array.from({plot.format('MT-Bench radar')}.querySelectorAll('polygon[stroke] title'))"
        ".map(t => [t.textContent, t.parentNode.getAttribute('stroke')])"
    )
    hist = browser.execute_script(
        f"return Array.from({plot.format('MT-Bench score distribution')}.querySelectorAll('rect title'))"
        ".map(t => [t.textContent.split(': ')[0], t.parentNode.getAttribute('fill')])"
    )
    assert [m for m, _ in radar] == [EVIL_MODEL, "llama-13b"]
    assert {m for m, _ in hist} == {EVIL_MODEL, "llama-13b"}
    assert all(dict(radar)[m] == c for m, c in hist), (radar, hist)
    assert dict(radar)[EVIL_MODEL] != dict(radar)["llama-13b"]
    # the histogram's x-axis is MT-Bench's 1-10 scale, whatever the data's range
    ticks = browser.execute_script(
        f"return Array.from({plot.format('MT-Bench score distribution')}.querySelectorAll('text.xtick'))"
        ".map(t => +t.textContent)"
    )
    assert ticks[0] == 1 and ticks[-1] == 10


def test_mtbench_logprob_judgment_shows_the_weighted_score(tmp_path: Path) -> None:
    probs = {"1": 0.35, "3": 0.05, "5": 0.3, "6": 0.3}
    weighted = sum(int(k) * p for k, p in probs.items())  # 3.8: what the score is, while the first token is "1"
    rows = [
        {
            "question_id": 81 + k,
            "model": m,
            "judge": ["local", "single-v1"],
            "score": weighted if k == 0 else 7.0,
            "turn": 1,
            "category": "writing",
            "judgment": "1",
            "score_mode": "logprob",
            "score_probs": probs,
            "user_prompt": "judge this",
            "status": "ok",
        }
        for k in range(2)
        for m in ("a", "b")
    ]
    html = judge.report(_write_jsonl(tmp_path / "lp_single.jsonl", rows))
    first = html.split('data-id="81:a:t1"')[1].split("</tr>")[0]
    judgment = first.split("<summary>judgment</summary>")[1].split("</pre>")[0]
    assert '<pre class="text">1' not in judgment  # not the bare first token as the verdict
    assert f"score {weighted:.2f}".rstrip("0") in judgment and "1: 35%, 5: 30%, 6: 30%, 3: 5%" in judgment
    assert "raw first token: &#39;1&#39;" in judgment


# ------------------------------------------------------------------------------ read at a glance (issue 20)


def _significant_counts(results: dict[str, Any], system: str) -> tuple[list[str], list[str]]:
    """Independently of the report: metrics whose paired delta's 95% CI lies wholly on the better / worse side."""
    better, worse = [], []
    for m, d in results["deltas"][system].items():
        higher = results["provenance"]["figures"][m]["direction"] == "higher"
        if d["ci_low"] is None:
            continue
        up, down = d["ci_low"] > 0, d["ci_high"] < 0
        if (up and higher) or (down and not higher):
            better.append(m)
        elif up or down:
            worse.append(m)
    return better, worse


def test_eval_report_leads_with_the_verdict(tmp_path: Path) -> None:
    from judge.report.eval import html as eval_section

    out, _ = make_eval(tmp_path)
    results = json.loads((out / "results.json").read_text())
    better, worse = _significant_counts(results, "tuned")
    assert worse == ["token_f1"]  # the fixture's tuned system is significantly worse on token_f1 only
    section = judge.report.load_section(out)
    assert section.headline is not None and section.fold_provenance
    (row,) = section.headline.rows
    assert row[0] == "tuned" and row[1].startswith(f"{len(better)} of 2") and row[2] == "1 of 2: token_f1"
    d = results["deltas"]["tuned"]["token_f1"]
    assert row[4].startswith("token_f1: Δ -0.091 [") and f"{d['ci_high']:.3f}"[:5] in row[4]
    failed = [g for g in results["gates"] if not g["passed"]]
    assert row[3] == f"FAIL (1 of 2: {failed[0]['metric']} {failed[0]['rule']})"
    assert section.verdict == "FAIL: 1 of 2 gates fail." and section.verdict_cls == "fail"
    html = judge.report(out)
    assert html.index('class="headline"') < html.index("Metrics: value") < html.index('<details class="provenance"')
    assert '{"' not in html.split('<details class="provenance">')[1].split("</details>")[0]  # no raw JSON
    assert "signature: nrefs:1" in html
    assert results["warnings"] and results["warnings"][0] in html  # the eval's own warnings are shown
    # lower-is-better: a delta whose CI lies above 0 is a regression
    flipped = json.loads(json.dumps(results))
    flipped["provenance"]["figures"]["token_f1"]["direction"] = "lower"
    (row,) = eval_section(flipped, [], [], "x").headline.rows
    assert row[1].startswith("1 of 2: token_f1") and row[2].startswith("0 of 2")


def test_eval_report_not_applicable_grid_and_clipped_histogram(tmp_path: Path) -> None:
    import numpy as np

    from judge.report import svg
    from judge.report.eval import html as eval_section

    out, _ = make_eval(tmp_path, without_reference=3)
    section = judge.report.load_section(out)
    assert "not applicable (no reference): base/chrf: 3, base/token_f1: 3, tuned/chrf: 3, tuned/token_f1: 3" in (
        section.notes
    )
    assert not any(n.startswith("unscored") for n in section.notes)
    grid = section.length_bias
    assert (
        grid is not None and grid.headers == ["", "base", "tuned"] and [r[0] for r in grid.rows] == ["token_f1", "chrf"]
    )
    assert all(c.endswith("(n=27)") for r in grid.rows for c in r[1:])
    # one outlier among 200 values: the axis is the 1st-99th percentile, not 0..5000
    rng = np.random.default_rng(0)
    vals = list(rng.normal(10, 1, 199)) + [5000.0]
    lo, hi = np.percentile(vals, [1, 99])
    assert svg.robust_range(vals) == pytest.approx((lo, hi))
    results = json.loads((out / "results.json").read_text())
    scores = [{"id": f"x{i}", "system": "base", "metric": "token_f1", "score": v} for i, v in enumerate(vals)]
    section = eval_section(results, scores, [], "x")
    caption, plot = next(p for p in section.plots if p[0].startswith("token_f1: share of items"))
    beyond = sum(v < lo or v > hi for v in vals)
    assert "clipped to the 1st–99th percentile" in caption and f"{beyond} values outside, in the end bins" in plot
    ticks = [float(t) for t in re.findall(r'class="xtick" fill="#666">([-\d.]+)<', plot)]
    assert ticks and min(ticks) >= lo - 1e-9 and max(ticks) <= hi + 1e-9
    assert svg.robust_range(vals[:199]) is None  # no outlier: the full range


def make_pairwise_both_orders(tmp: Path) -> tuple[Path, Path, dict[str, float]]:
    """--both-orders pairwise verdicts and their items (output, output_b); returns the expected statistics,
    counted here by hand: a pair is consistent when the swapped order's label, read back, is the same."""
    from judge.rubric import load_rubric

    digest = load_rubric("pairwise").content_hash
    swap = {"A": "B", "B": "A", "tie": "tie"}
    patterns = [("A", "B"), ("A", "A"), ("B", "A"), ("A", "B"), ("tie", "B"), ("A", "tie"), ("B", "A"), ("A", "B")]
    items, rows = [], []
    consistent = first = decisive = longer = length_decisive = 0
    for i in range(40):
        g1, g2 = patterns[i % len(patterns)]
        la, lb = 50 + 7 * i, 400 - 3 * i
        items.append({"id": f"p{i}", "input": "which?", "output": "a" * la, "output_b": "b" * lb})
        agree = g1 == swap[g2]
        consistent += agree
        for lab in (g1, g2):
            if lab in ("A", "B"):
                decisive += 1
                first += lab == "A"
        for pick in (g1, swap[g2]):
            if pick in ("A", "B") and la != lb:
                length_decisive += 1
                longer += (pick == "A") == (la > lb)
        label = g1 if agree else "tie"
        rows.append(
            Verdict(
                id=f"p{i}", rubric="pairwise", rubric_hash=digest, judge_model="fake/x", score_mode="text",
                score={"A": 1.0, "B": 0.0, "tie": 0.5}[label], status="ok", label=label, orders=[[g1, g2]],
                consistent=agree,
            ).model_dump(mode="json")
        )  # fmt: skip
    expected = {
        "consistency": consistent / 40,
        "p_first_wins": first / decisive,
        "p_longer_wins": longer / length_decisive,
        "longer": longer,
        "length_decisive": length_decisive,
    }
    return _write_jsonl(tmp / "pw.verdicts.jsonl", rows), _write_jsonl(tmp / "pw.jsonl", items), expected


def make_scale_verdicts(tmp: Path) -> Path:
    """21 factuality verdicts (a 1-5 rubric) whose scores (means of repeats) only span 1.8-2.8."""
    from judge.rubric import load_rubric

    rubric = load_rubric("factuality")
    assert (rubric.spec.scale.min, rubric.spec.scale.max) == (1, 5)
    rows = [
        Verdict(
            id=f"s{i}", rubric="factuality", rubric_hash=rubric.content_hash, judge_model="fake/x", score_mode="text",
            score=1.8 + i / 20, status="ok", repeat_scores=[1.8 + i / 20], spread=0.0, flipped=False,
        ).model_dump(mode="json")
        for i in range(21)
    ]  # fmt: skip
    return _write_jsonl(tmp / "s.verdicts.jsonl", rows)


def test_score_report_title_scale_and_position(tmp_path: Path) -> None:
    verdicts, items, _ = make_verdicts(tmp_path)
    other = _write_jsonl(tmp_path / "b.verdicts.jsonl", [json.loads(x) for x in verdicts.read_text().splitlines()])
    html = judge.report(verdicts, other, items=items)
    assert "<title>judge report: verdicts (2)</title>" in html and "verdicts, verdicts" not in html
    # the rubric's 1-5 scale, not the scores' 1.8-2.8
    plot = judge.report(make_scale_verdicts(tmp_path))
    ticks = [float(t) for t in re.findall(r'class="xtick" fill="#666">([-\d.]+)<', plot)]
    assert ticks[0] == 1 and ticks[-1] == 5 and "x-axis: the rubric&#39;s scale 1–5" in plot
    # --both-orders: position consistency and P(first wins), and P(longer wins) with the items
    pw, pw_items, expected = make_pairwise_both_orders(tmp_path)
    section = judge.report.load_section(pw, items=pw_items)
    table = next(t for t in section.tables if t.title.startswith("Judge position"))
    got = {r[0]: float(r[1].split(" [")[0]) for r in table.rows}
    assert got["position consistency"] == pytest.approx(expected["consistency"], abs=5e-4)
    assert got["P(first position wins)"] == pytest.approx(expected["p_first_wins"], abs=5e-4)
    assert got["P(longer answer wins)"] == pytest.approx(expected["p_longer_wins"], abs=5e-4)
    # with its Wilson 95% CI, as scipy computes it
    from scipy.stats import binomtest

    share = next(r[1] for r in table.rows if r[0] == "P(longer answer wins)")
    ci = binomtest(int(expected["longer"]), int(expected["length_decisive"])).proportion_ci(method="wilson")
    assert share.split(" [")[1] == f"{fmt(ci.low, 3)}, {fmt(ci.high, 3)}]"


def test_score_report_length_bias_carries_a_fisher_z_interval(tmp_path: Path) -> None:
    from scipy.stats import norm, spearmanr

    verdicts, items, _ = make_verdicts(tmp_path)
    texts = {json.loads(x)["id"]: json.loads(x)["output"] for x in items.read_text().splitlines()}
    scored = [json.loads(x) for x in verdicts.read_text().splitlines() if json.loads(x)["status"] == "ok"]
    rho = spearmanr([len(texts[r["id"]]) for r in scored], [r["score"] for r in scored]).statistic
    half = norm.ppf(0.975) * (((1 + rho**2 / 2) / (len(scored) - 3)) ** 0.5)  # Bonett-Wright variance
    lo, hi = math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)
    grid = judge.report.load_section(verdicts, items=items).length_bias
    assert grid is not None and "95% CI, Fisher z" in grid.title
    assert grid.rows == [["factuality", f"{fmt(rho, 3)} [{fmt(lo, 3)}, {fmt(hi, 3)}] (n={len(scored)})"]]


def test_browser_score_report_axis_and_position(browser: Any, tmp_path: Path) -> None:
    pw, pw_items, expected = make_pairwise_both_orders(tmp_path)
    page = tmp_path / "score.html"
    judge.report(make_scale_verdicts(tmp_path), pw, items=pw_items, out=page)
    open_report(browser, page)
    assert browser.execute_script("return document.title") == "judge report: verdicts (2)"
    ticks = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg[aria-label=\"factuality score distribution\"] text.xtick'))"
        ".map(t => +t.textContent)"
    )
    assert ticks[0] == 1 and ticks[-1] == 5  # the rubric's scale, not the scores' 1.8-2.8
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('section[data-kind=verdicts] table.stats tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    shown = {r[0]: float(r[1].split(" [")[0]) for r in rows if r and r[0].startswith(("position", "P("))}
    assert shown["position consistency"] == pytest.approx(expected["consistency"], abs=5e-4)
    assert shown["P(longer answer wins)"] == pytest.approx(expected["p_longer_wins"], abs=5e-4)
