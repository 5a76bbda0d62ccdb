"""What each local signal is worth: every offline signal on the same items, through the CLI a user runs.

Writes the items and labels of four human-labelled sets into a scratch folder, runs on them

- the local judge ``judge score -j local/smollm2`` in each score mode (``logprob``; ``text`` on a subsample,
  free generation being the slowest), rubric ``faithfulness`` (consistency) and ``relevance``, and the
  ``pairwise`` rubric in both orders on LLMBar;
- ``judge baseline entailment`` (zero-shot SmolLM2), ``judge baseline pmi`` (its ``pmi`` and
  ``logp_given_source`` fields), ``judge baseline perplexity`` and ``judge baseline similarity`` (MiniLM,
  against the source);

and scores every one with ``judge calibrate`` (bootstrap 95 % CIs, SummEval resampled by article with
``--group``). Prints a markdown table and writes it to ``SCRATCH/table.md``.

Statistics: SummEval (mean of 3 expert ratings, 1-5) Spearman and Kendall tau-b; QAGS CNN/DM (share of
a summary's sentences the crowd found supported, 0-1) Spearman and Kendall; QAGS XSum (binary: the one
sentence supported or not) ROC AUC and balanced accuracy at a cross-validated cutoff; LLMBar Natural (expert pairwise
gold) accuracy. Per-output signals answer LLMBar pairwise by picking the output with the higher signal
(lower perplexity); the pairwise judge's P(output_1 better) is averaged over both orders.

Every command's output is kept in SCRATCH (default ``/tmp/judge-local-signals``): a rerun skips the
commands whose output exists, so only the statistics are redone.

    HF_HUB_OFFLINE=1 python bench/local_signals.py --summeval-articles 20 --summeval-systems 8 --qags 100
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo
JUDGE = [sys.executable, "-m", "judge"]  # `judge` of this interpreter (honours PYTHONPATH)
INSTRUCTION = "Summarize this news article."  # the relevance rubric's question; the article is its context


# ---------------------------------------------------------------- datasets


def summeval(n_articles: int, n_systems: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (DATA / "summeval/summeval_flat.jsonl").open()]
    docs = sorted({r["doc_id"] for r in rows})[:n_articles]  # sorted ids: a fixed, content-blind subset
    systems = sorted({r["system_id"] for r in rows}, key=lambda s: int(s[1:]))
    step = len(systems) / n_systems
    keep_sys = {systems[int(k * step)] for k in range(n_systems)}  # spread over the 16 systems
    return [
        {
            "id": f"{r['doc_id']}/{r['system_id']}",
            "input": INSTRUCTION,
            "context": r["source"],
            "output": r["summary"],
            "article": r["doc_id"],
            "consistency": r["consistency"],
            "relevance": r["relevance"],
        }
        for r in rows
        if r["doc_id"] in docs and r["system_id"] in keep_sys
    ]


def qags(name: str, n: int) -> list[dict[str, Any]]:
    recs = json.loads((DATA / f"qags/unieval_format/qags_{name}.json").read_text())[:n]
    return [
        {
            "id": f"qags-{name}-{i}",
            "input": INSTRUCTION,
            "context": r["source"],
            "output": r["system_output"],
            "consistency": r["scores"]["consistency"],
        }
        for i, r in enumerate(recs)
    ]


def llmbar(n: int) -> list[dict[str, Any]]:
    return json.loads((DATA / "llmbar/LLMBar/Natural/dataset.json").read_text())[:n]


# ---------------------------------------------------------------- running the CLI


def run(cmd: list[str], out: Path, log: Path) -> float | None:
    """Run ``cmd`` unless ``out`` exists; returns its wall time (read back from OUT.time when cached)."""
    timing = out.with_suffix(out.suffix + ".time")
    if out.exists():
        return json.loads(timing.read_text())["seconds"] if timing.exists() else None
    print("  $ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with log.open("a") as err:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        proc = subprocess.run(cmd, stdout=err, stderr=err, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 3) or not out.exists():  # 3: some items unscored, the file is complete
        print(f"  failed (exit {proc.returncode}); see {log}", file=sys.stderr, flush=True)
        return None
    timing.write_text(json.dumps({"seconds": seconds, "cmd": cmd}))
    print(f"    {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not path.exists() or path.read_text() != text:  # a command of another run may be reading it
        path.write_text(text)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open() if line.strip()]


def write_labels(path: Path, rows: list[dict[str, Any]], label: str, group: str | None = None) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "label"] + ([group] if group else []))
    for r in rows:
        w.writerow([r["id"], r[label]] + ([r[group]] if group else []))
    if not path.exists() or path.read_text() != buf.getvalue():
        path.write_text(buf.getvalue())


def calibrate(
    judge_file: Path,
    labels: Path,
    label_type: str,
    column: str,
    boot: int,
    group: str | None = None,
    group_of: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    out = judge_file.parent / f"{judge_file.stem}.{labels.stem}.{column}.calib.json"
    if group and group_of:
        # `judge calibrate --group` reads the column from the judge results only (the labels loader keeps
        # id/label/annotator), and neither verdicts nor baseline records carry item columns: add it here
        grouped = judge_file.with_name(f"{judge_file.stem}.{group}.jsonl")
        if not grouped.exists():
            write_jsonl(grouped, [{**r, group: group_of[r["id"]]} for r in read_jsonl(judge_file)])
        judge_file = grouped
    if not out.exists():
        cmd = [*JUDGE, "calibrate", "--judge", str(judge_file), "--human", str(labels), "--label-type", label_type]
        cmd += ["--score-column", column, "--bootstrap", str(boot), "--seed", "0", "--json", str(out)]
        cmd += ["--group", group] if group else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"  calibrate failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}", file=sys.stderr, flush=True)
            return None
    return json.loads(out.read_text())


# ---------------------------------------------------------------- signals


def per_item_commands(items: Path, d: Path, source: str, judge_rubrics: list[str]) -> dict[str, tuple]:
    """name -> (command, output file, score column(s)). Per-item signals on ``items``."""
    cmds: dict[str, tuple] = {}
    base = {  # cheapest first, so that a run cut short still has them
        "perplexity": ([], ["perplexity"]),
        "similarity": (["--against", source], ["similarity"]),
        "pmi": (["--source", source], ["logp_given_source", "pmi"]),
    }
    for name, (opts, cols) in base.items():
        out = d / f"{name}.jsonl"
        cmds[name] = ([*JUDGE, "baseline", name, str(items), *opts, "--out", str(out)], out, cols)
    for rubric in judge_rubrics:
        for mode in ("logprob", "reason"):
            cmds[f"judge_{mode}_{rubric}"] = judge_command(items, d, rubric, mode)
    out = d / "entailment.jsonl"
    cmds["entailment"] = (
        [*JUDGE, "baseline", "entailment", str(items), "--premise", source, "--out", str(out)],
        out,
        ["entailment", "entailment_min"],
    )
    return cmds


def judge_command(items: Path, d: Path, rubric: str, mode: str) -> tuple:
    """The local judge on every item in a mode that reads the score distribution (logprob, reason)."""
    out = d / f"judge_{mode}_{rubric}.jsonl"
    cmd = [*JUDGE, "score", str(items), "-r", rubric, "-j", "local/smollm2", "--score-mode", mode]
    return cmd + ["-o", str(out), "--cache-dir", str(d / "cache"), "--max-unscored", "1"], out, ["score"]


def text_command(items: Path, d: Path, rubric: str, every: int, extra: list[str] | None = None) -> tuple:
    # every 4th item keeps the plain name of the first runs; another subsample gets its own file
    out = d / (f"judge_text_{rubric}.jsonl" if every == 4 else f"judge_text_every{every}_{rubric}.jsonl")
    cmd = [*JUDGE, "score", str(items), "-r", rubric, "-j", "local/smollm2", "--score-mode", "text"]
    cmd += ["-o", str(out), "--cache-dir", str(d / "cache"), "--max-unscored", "1", *(extra or [])]
    return cmd, out


LABELS = {  # row label of each (signal, column) in the table
    ("judge_logprob_faithfulness", "score"): "local judge, logprob (faithfulness rubric)",
    ("judge_logprob_relevance", "score"): "local judge, logprob (relevance rubric)",
    ("judge_text_faithfulness", "score"): "local judge, text (faithfulness rubric)",
    ("judge_text_relevance", "score"): "local judge, text (relevance rubric)",
    ("judge_logprob_pairwise", "score"): "local judge, logprob (pairwise rubric, both orders averaged)",
    ("judge_reason_faithfulness", "score"): "local judge, reason (faithfulness rubric)",
    ("judge_reason_relevance", "score"): "local judge, reason (relevance rubric)",
    ("judge_reason_pairwise", "score"): "local judge, reason (pairwise rubric, both orders averaged)",
    ("judge_text_pairwise", "score"): "local judge, text (pairwise rubric, both orders)",
    ("entailment", "entailment"): "entailment, zero-shot SmolLM2 (mean P(yes))",
    ("entailment", "entailment_min"): "entailment, zero-shot SmolLM2 (min P(yes))",
    ("pmi", "logp_given_source"): "log p(output | source) / token",
    ("pmi", "pmi"): "PMI(output; source) / token",
    ("perplexity", "perplexity"): "perplexity (lower = better)",
    ("similarity", "similarity"): "MiniLM similarity(output, source)",
}


def fmt(stat: dict[str, Any] | None, signed: bool = True) -> str:
    if not stat or stat.get("value") is None:
        return "–"
    f = "{:+.2f}" if signed else "{:.2f}"
    v = f.format(stat["value"])
    if stat.get("ci_low") is None:
        return v
    return f"{v} [{f.format(stat['ci_low'])}, {f.format(stat['ci_high'])}]"


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scratch", default="/tmp/judge-local-signals")
    ap.add_argument("--summeval-articles", type=int, default=20)
    ap.add_argument("--summeval-systems", type=int, default=8, help="of the 16, spread evenly")
    ap.add_argument("--qags", type=int, default=100, help="first N summaries of each QAGS set")
    ap.add_argument("--llmbar", type=int, default=100, help="first N pairs of LLMBar Natural")
    ap.add_argument(
        "--text-every",
        default="4",
        help="text mode: every k-th item only (slow); K for every set, or per set as SET=K,... (others 4)",
    )
    ap.add_argument("--sets", default="summeval,qags_cnndm,qags_xsum,llmbar")
    ap.add_argument("--signals", default="judge_logprob,judge_reason,entailment,pmi,perplexity,similarity,judge_text")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--no-run", action="store_true", help="only the statistics of outputs already there")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    sets = args.sets.split(",")
    wanted = args.signals.split(",")
    log = scratch / "commands.log"
    text_every: dict[str, int] = {}
    for part in args.text_every.split(","):
        key, _, k = part.rpartition("=")
        text_every[key or "*"] = int(k)

    def every_of(sname: str) -> int:
        return text_every.get(sname, text_every.get("*", 4))

    def want(name: str) -> bool:
        return any(name.startswith(w) for w in wanted)

    rows: list[dict[str, Any]] = []  # one per (set, statistic column, signal)
    times: dict[tuple[str, str], tuple[float | None, int]] = {}

    # ---------------- summaries: SummEval, QAGS
    summary_sets = {
        "summeval": lambda: summeval(args.summeval_articles, args.summeval_systems),
        "qags_cnndm": lambda: qags("cnndm", args.qags),
        "qags_xsum": lambda: qags("xsum", args.qags),
    }
    for sname, load in summary_sets.items():
        if sname not in sets:
            continue
        data = load()
        d = scratch / f"{sname}-{len(data)}"
        d.mkdir(exist_ok=True)
        items = d / "items.jsonl"
        write_jsonl(items, [{k: r[k] for k in ("id", "input", "context", "output")} for r in data])
        every = every_of(sname)
        text_sub = data[::every]
        text_items = d / f"items_text_every{every}.jsonl"
        write_jsonl(text_items, [{k: r[k] for k in ("id", "input", "context", "output")} for r in text_sub])
        group = "article" if sname == "summeval" else None
        group_of = {r["id"]: r["article"] for r in data} if group else None
        dims = ["consistency", "relevance"] if sname == "summeval" else ["consistency"]
        rubric_of = {"consistency": "faithfulness", "relevance": "relevance"}
        rubrics = [rubric_of[x] for x in dims]
        label_files = {}
        for dim in dims:
            label_files[dim] = d / f"labels_{dim}.csv"
            write_labels(label_files[dim], data, dim, group)
            label_files[dim + "@text"] = d / f"labels_{dim}_text_every{every}.csv"
            write_labels(label_files[dim + "@text"], text_sub, dim, group)
        print(f"{sname}: {len(data)} items ({len(text_sub)} in text mode) -> {d}", file=sys.stderr, flush=True)

        cmds = per_item_commands(items, d, "context", rubrics)
        for rubric in rubrics:
            cmds[f"judge_text_{rubric}"] = (*text_command(text_items, d, rubric, every), ["score"])
        outputs = {}
        for name, (cmd, out, cols) in cmds.items():
            if not want(name):
                continue
            seconds = None if args.no_run and not out.exists() else run(cmd, out, log)
            n = len(text_sub) if name.startswith("judge_text") else len(data)
            times[(sname, name)] = (seconds, n)
            if out.exists():
                outputs[name] = (out, cols)
        binary = sname == "qags_xsum"
        for dim in dims:
            for name, (out, cols) in outputs.items():
                if name.startswith("judge_") and not name.endswith(rubric_of[dim]):
                    continue
                for col in cols:
                    subsets = [("all", label_files[dim])]
                    if name.startswith("judge_text"):
                        subsets = [("text", label_files[dim + "@text"])]
                    elif name.startswith("judge_logprob") and want("judge_text"):
                        subsets.append(("text", label_files[dim + "@text"]))  # the same items as text mode
                    for subset, lab in subsets:
                        rep = calibrate(out, lab, "binary" if binary else "ordinal", col, args.boot, group, group_of)
                        if rep is None:  # e.g. nothing scored: still say how many were
                            rows.append(
                                unscored_row(sname, dim, LABELS.get((name, col), f"{name}:{col}"), subset, out, lab)
                            )
                            continue
                        m = rep["metrics"]
                        rows.append(
                            {
                                "set": sname,
                                "dim": dim,
                                "signal": LABELS.get((name, col), f"{name}:{col}"),
                                "subset": subset,
                                "n": rep.get("n_compared"),
                                "unscored": rep.get("n_unscored"),
                                "groups": rep.get("n_groups"),
                                "ci_method": rep.get("ci_method"),
                                "a": m.get("roc_auc") if binary else m.get("spearman"),
                                "b": m.get("balanced_accuracy") if binary else m.get("kendall_tau"),
                            }
                        )

    # ---------------- LLMBar Natural: pairwise
    if "llmbar" in sets:
        pairs = llmbar(args.llmbar)
        d = scratch / f"llmbar-{len(pairs)}"
        d.mkdir(exist_ok=True)
        gold = [{"id": f"n{i}", "label": "A" if p["label"] == 1 else "B"} for i, p in enumerate(pairs)]
        labels = d / "labels.csv"
        write_labels(labels, gold, "label")
        # per-output signals: each output scored alone against the instruction
        singles = [
            {"id": f"n{i}-{k}", "input": p["input"], "output": p[f"output_{k}"]}
            for i, p in enumerate(pairs)
            for k in (1, 2)
        ]
        items = d / "outputs.jsonl"
        write_jsonl(items, singles)
        # the pairwise judge: both orders as separate rows (the verdicts keep each order's probabilities)
        both = [
            {"id": f"n{i}{suffix}", "input": p["input"], "output": p[a], "output_b": p[b]}
            for i, p in enumerate(pairs)
            for suffix, a, b in (("", "output_1", "output_2"), ("~swap", "output_2", "output_1"))
        ]
        pair_items = d / "pairs_both_orders.jsonl"
        write_jsonl(pair_items, both)
        print(f"llmbar: {len(pairs)} pairs -> {d}", file=sys.stderr, flush=True)
        cmds = per_item_commands(items, d, "input", [])
        for mode in ("logprob", "reason"):
            cmds[f"judge_{mode}_pairwise"] = judge_command(pair_items, d, "pairwise", mode)
        every = every_of("llmbar")
        text_pairs = [p for p in both if int(p["id"][1:].split("~")[0]) % every == 0]
        text_items = d / f"pairs_text_every{every}.jsonl"
        write_jsonl(text_items, text_pairs)
        cmds["judge_text_pairwise"] = (*text_command(text_items, d, "pairwise", every), ["score"])
        for name, (cmd, out, cols) in cmds.items():
            if not want(name):
                continue
            seconds = None if args.no_run and not out.exists() else run(cmd, out, log)
            n = len(text_pairs) if name == "judge_text_pairwise" else len(both if "pairwise" in name else singles)
            times[("llmbar", name)] = (seconds, n)
            if not out.exists():
                continue
            recs = {r["id"]: r for r in read_jsonl(out)}
            for col in cols:
                picks = []
                for g in gold:
                    i = g["id"]
                    if name.endswith("pairwise"):  # P(output_1 better), averaged over the two orders
                        r1, r2 = recs.get(i), recs.get(i + "~swap")
                        s1 = None if r1 is None or r1.get("score") is None else r1["score"]
                        s2 = None if r2 is None or r2.get("score") is None else 1.0 - r2["score"]
                        a, b = (None, None) if s1 is None or s2 is None else ((s1 + s2) / 2, 0.5)
                    else:
                        a, b = recs[f"{i}-1"].get(col), recs[f"{i}-2"].get(col)
                        if col == "perplexity" and a is not None and b is not None:
                            a, b = -a, -b  # lower perplexity wins
                    pick = None if a is None or b is None else ("A" if a > b else "B" if b > a else "tie")
                    picks.append({"id": i, "score": pick, "status": "ok" if pick else "unscored"})
                if name.startswith("judge_text"):
                    gl = d / f"labels_text_every{every}.csv"
                    write_labels(gl, [g for g in gold if int(g["id"][1:]) % every == 0], "label")
                    picks = [p for p in picks if int(p["id"][1:]) % every == 0]
                else:
                    gl = labels
                pick_file = d / f"pick_{name}_{col}.jsonl"
                write_jsonl(pick_file, [p for p in picks if p["score"] is not None])
                rep = calibrate(pick_file, gl, "pairwise", "score", args.boot)
                if rep is None:  # e.g. nothing scored: still say how many were
                    sub = "text" if name.startswith("judge_text") else "all"
                    rows.append(
                        unscored_row(
                            "llmbar", "preference", LABELS.get((name, col), f"{name}:{col}"), sub, pick_file, gl
                        )
                    )
                    continue
                m = rep["metrics"]
                rows.append(
                    {
                        "set": "llmbar",
                        "dim": "preference",
                        "signal": LABELS.get((name, col), f"{name}:{col}"),
                        "subset": "text" if name.startswith("judge_text") else "all",
                        "n": rep.get("n_compared"),
                        "unscored": len(gold if not name.startswith("judge_text") else picks)
                        - sum(p["score"] is not None for p in picks),
                        "groups": None,
                        "ci_method": rep.get("ci_method"),
                        "a": m.get("agreement_with_ties"),
                        "b": {"value": sum(p["score"] == "tie" for p in picks)},
                    }
                )

    table = render(rows, times)
    (scratch / "table.md").write_text(table)
    (scratch / "rows.json").write_text(
        json.dumps({"rows": rows, "times": {f"{k[0]}:{k[1]}": v for k, v in times.items()}}, indent=1)
    )
    print(table)


def unscored_row(sname: str, dim: str, signal: str, subset: str, out: Path, labels: Path) -> dict[str, Any]:
    """A table row for a command whose output ``calibrate`` could not score (no or too few items scored)."""
    ids = {r["id"] for r in csv.DictReader(labels.open())}
    recs = [r for r in read_jsonl(out) if r["id"] in ids]
    scored = sum(r.get("score") is not None for r in recs)
    return {
        "set": sname,
        "dim": dim,
        "signal": signal,
        "subset": subset,
        "n": scored,
        "unscored": len(ids) - scored,  # labelled items without a score (LLMBar: a pair missing an order)
        "groups": None,
        "ci_method": None,
        "a": None,
        "b": None,
    }


STAT_NAMES = {
    "summeval": ("Spearman ρ", "Kendall τ-b"),
    "qags_cnndm": ("Spearman ρ", "Kendall τ-b"),
    "qags_xsum": ("ROC AUC", "balanced accuracy (CV cutoff)"),
    "llmbar": ("accuracy (ties count wrong)", "ties"),
}
SET_NAMES = {
    "summeval": "SummEval",
    "qags_cnndm": "QAGS CNN/DM",
    "qags_xsum": "QAGS XSum",
    "llmbar": "LLMBar Natural",
}


def render(rows: list[dict[str, Any]], times: dict[tuple[str, str], tuple[float | None, int]]) -> str:
    out = []
    for sname, dim in dict.fromkeys((r["set"], r["dim"]) for r in rows):
        a_name, b_name = STAT_NAMES[sname]
        out.append(f"\n**{SET_NAMES[sname]}, {dim}**\n")
        out.append(f"| signal | items | n | {a_name} [95% CI] | {b_name} |")
        out.append("|---|---|---|---|---|")
        for r in rows:
            if (r["set"], r["dim"]) != (sname, dim):
                continue
            n = f"{r['n']}" + (f" ({r['groups']} articles)" if r.get("groups") else "")
            if r.get("unscored"):
                n += f", {r['unscored']} unscored"
            subset = "text-mode subset" if r["subset"] == "text" else "all"
            signed = sname in ("summeval", "qags_cnndm")
            b = r["b"]
            bcell = str(b["value"]) if sname == "llmbar" and b else fmt(b, signed=signed)
            out.append(f"| {r['signal']} | {subset} | {n} | {fmt(r['a'], signed)} | {bcell} |")
    out.append("\n**Wall time per command** (seconds, model load included; items = rows the command scored)\n")
    out.append("| set | command | items | seconds | s / item |")
    out.append("|---|---|---|---|---|")
    for (sname, name), (sec, n) in times.items():
        s = "–" if sec is None else f"{sec:.0f}"
        per = "–" if sec is None or not n else f"{sec / n:.2f}"
        out.append(f"| {SET_NAMES[sname]} | {name} | {n} | {s} | {per} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
