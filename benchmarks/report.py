"""Write the result tables of docs/benchmarks.md: tasks from benchmarks/results/*.json
(`benchmarks/tasks.py`), Ray dispatch and checkpoint upload from benchmarks/results/cluster/
cluster.json (`benchmarks/cluster.py`), pre-training from benchmarks/results/pretrain/demo.json
(`benchmarks/pretrain.py`) and the pre-training part of chnsenticorp.json.

    python benchmarks/report.py

Replaces what stands between each section's `<!-- NAME:begin -->` and `<!-- NAME:end -->`
markers, so the figures there are the result files' figures, never typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results"


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def table(results: list[dict]) -> str:
    lines = ["| study | task | test metric | champion | baseline | champion − baseline | best validation "
             "| trials | wall time | machine, date, commit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        gap = r["champion"] - r["baseline"] if r["champion"] is not None and r["baseline"] is not None else None
        states = ", ".join(f"{r['trials'].count(s)} {s}" for s in dict.fromkeys(r["trials"]))
        command = " ".join(["python benchmarks/tasks.py", r["name"], *r["overrides"]])
        lines.append(f"| `{command}` | {r['task']} | {r['metric']} | {_fmt(r['champion'])} | {_fmt(r['baseline'])} "
                     f"| {'' if gap is None else f'{gap:+.4f}'} | {_fmt(r['best_validation'])} ({r['search_metric']}) "
                     f"| {states} | {r['wall_seconds'] / 60:.1f} min{'*' if r.get('note') else ''} "
                     f"| {r['machine']}, {r['date']}, {r['commit']} |")
    lines += ["", *(f"\\* {r['name']}: {r['note']}" for r in results if r.get("note"))]
    return "\n".join(lines)


def cluster_table(r: dict) -> str:
    d, u = r["dispatch"], r["upload"]
    n = len(d["local"]["trial_seconds"])
    ray_first, local_first = d["ray"]["trial_seconds"][0], d["local"]["trial_seconds"][0]
    later = d["later_trial_mean_seconds"]
    return "\n".join([
        f"Machine: {r['machine']}, {r['date']}, commit {r['commit']}; {n} trials per executor, one at a time.",
        "",
        "| per trial (driver's wall time) | local executor | Ray executor (1-node cluster) | Ray − local "
        "| Ray / local |",
        "|---|---|---|---|---|",
        f"| first trial (Ray ships data and model to the node) | {local_first:.1f} s | {ray_first:.1f} s "
        f"| {d['first_trial_extra_seconds']:+.1f} s | {ray_first / local_first:.2f} |",
        f"| later trials, mean | {later['local']:.1f} s | {later['ray']:.1f} s "
        f"| {d['later_trial_extra_seconds']:+.1f} s | {d['ratio_ray_to_local']:.2f} |",
        "",
        f"| checkpoint of {u['checkpoint_mb']:.0f} MB | upload | download |",
        "|---|---|---|",
        f"| embedded store (local folder) | {u['embedded_upload_s']:.1f} s | {u['embedded_download_s']:.1f} s |",
        f"| MLflow server (basic auth) → S3 (moto on loopback) | {u['server_upload_s']:.1f} s "
        f"| {u['server_download_s']:.1f} s |",
        f"| by hand: boto3 `upload_file` straight to the same bucket | {u['boto3_upload_s']:.1f} s | |",
        "",
        f"Through the MLflow server the upload takes {u['ratio_server_to_boto3']:.2f}× the direct upload."])


def pretrain_table(demo: dict | None, chinese: dict | None) -> str:
    lines = []
    if demo:
        p, q = demo["plain"], demo["pretrained"]
        pre = q["pretrain"]
        lines += [
            f"Demo, equal search budget ({len(p['trials'])} trials each, same sampler seed and space); "
            f"{p['machine']}, {p['date']}, commit {p['commit']}.",
            "",
            "| encoder | best validation macro-F1 | champion test macro-F1 | study wall time |",
            "|---|---|---|---|",
            f"| all-MiniLM-L6-v2 as it is | {_fmt(p['best_validation'])} | {_fmt(p['champion'])} "
            f"| {p['wall_seconds'] / 60:.1f} min |",
            f"| the same, after {pre['steps']:.0f} steps of masked-LM pre-training on the training split "
            f"({pre['train_texts']} texts) | {_fmt(q['best_validation'])} | {_fmt(q['champion'])} "
            f"| {q['wall_seconds'] / 60:.1f} min (pre-training {pre['minutes']:.1f} min) |",
            f"| difference | {demo['delta_best_validation']:+.4f} | {demo['delta_champion_test']:+.4f} | |",
            "",
            f"Held-out perplexity of the pre-training ({pre['held_out_texts']} texts): {pre['perplexity_start']:.1f} "
            f"at step 0 (MiniLM has no masked-LM head: it starts untrained), {pre['perplexity_end']:.1f} at the end.",
            ""]
    if chinese and "pretrain" in chinese:
        pre, chinese_trials = chinese["pretrain"], chinese["trials"]
        lines += [
            f"Chinese (ChnSentiCorp), `python benchmarks/tasks.py chnsenticorp{' ' if chinese['overrides'] else ''}"
            f"{' '.join(chinese['overrides'])}`; {chinese['machine']}, {chinese['date']}, commit {chinese['commit']}.",
            "",
            "| stage | figure |",
            "|---|---|",
            f"| pre-training from scratch ({pre['train_texts']} training texts) | {pre['steps']:.0f} steps in "
            f"{pre['minutes']:.1f} min; held-out perplexity {pre['perplexity_start']:.0f} → "
            f"{pre['perplexity_end']:.1f} ({pre['held_out_texts']} texts) |",
            f"| search ({', '.join(f'{chinese_trials.count(s)} {s}' for s in dict.fromkeys(chinese_trials))}) "
            f"| best validation macro-F1 {_fmt(chinese['best_validation'])} |",
            f"| champion, test macro-F1 | {_fmt(chinese['champion'])} |",
            f"| baseline: TF-IDF character 1-3-grams + balanced logistic regression, test macro-F1 "
            f"| {_fmt(chinese['baseline'])} |",
            f"| study wall time | {chinese['wall_seconds'] / 60:.1f} min |",
            *([""] + [f"Note: {chinese['note']}."] if chinese.get("note") else [])]
    return "\n".join(lines) if lines else "(not measured yet)"


def _replace(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + body + "\n" + text[stop:]


def main() -> None:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    text = _replace(DOC.read_text(), "tasks", table(results))
    cluster = RESULTS / "cluster" / "cluster.json"
    if cluster.exists():
        text = _replace(text, "cluster", cluster_table(json.loads(cluster.read_text())))
    demo, chinese = RESULTS / "pretrain" / "demo.json", RESULTS / "chnsenticorp.json"
    text = _replace(text, "pretrain", pretrain_table(json.loads(demo.read_text()) if demo.exists() else None,
                                                     json.loads(chinese.read_text()) if chinese.exists() else None))
    DOC.write_text(text)
    print(text[text.index("## Tasks on real data"):text.index("## Test suite")])


if __name__ == "__main__":
    main()
