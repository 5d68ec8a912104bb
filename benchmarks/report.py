"""Write the result tables of docs/benchmarks.md: tasks from benchmarks/results/*.json
(`benchmarks/tasks.py`), Ray dispatch and checkpoint upload from benchmarks/results/cluster/
cluster.json (`benchmarks/cluster.py`), pre-training from benchmarks/results/pretrain/demo.json
(`benchmarks/pretrain.py`) and the pre-training part of chnsenticorp.json, the pre-training
objectives from benchmarks/results/pretrain/objectives-*.json (`pretrain_objectives.py`), speed from
benchmarks/results/perf/ (`compare_trainer.py`, `compare_search.py`: compare_search-<data>-<device>.json
with its three sides; compare_search-<device>.json, the earlier two-sided demo run, `gpu.sh`).

    python benchmarks/report.py

Replaces what stands between each section's `<!-- NAME:begin -->` and `<!-- NAME:end -->`
markers, so the figures there are the result files' figures, never typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pretrain_objectives  # the masked-LM-or-ELECTRA table (benchmarks/ is on the path when run as a script)

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
    return "\n".join(lines + _references(results))


def _references(results: list[dict]) -> list[str]:
    """The published figure beside each run that has one (`tasks.py` REFERENCES), with the
    encoder that ran: a small CPU encoder on a few thousand rows is not expected to reach them."""
    rows = [r for r in results if r.get("reference")]
    if not rows:
        return []
    lines = ["", "Published references beside these runs (a different, larger encoder trained on the full "
                 "training set; not a target for a small CPU encoder on a slice):", "",
             "| study | encoder that ran | champion | published | published model | source |", "|---|---|---|---|---|---|"]
    for r in rows:
        ref = r["reference"]
        scale = 100 if ref["value"] > 1 else 1  # SQuAD-style figures are published in percent
        # The champion's figure in the reference's metric (SNLI is published as accuracy, our main metric is macro-F1).
        metric = ref["metric"] if f"champion_{ref['metric']}" in r.get("other_metrics", {}) else r["metric"]
        value = r.get("other_metrics", {}).get(f"champion_{metric}", r["champion"])
        ours = "" if value is None else f"{value * scale:.2f}" if scale == 100 else _fmt(value)
        lines.append(f"| {r['name']} | `{r.get('encoder', '')}` | {ours} ({metric}) | {ref['value']} "
                     f"({ref['metric']}) | {ref['model']} | {ref['source']} |")
    return lines


def evidence_section(results: list[dict]) -> str:
    """Per study that recorded it (issue 23): the champion's test CI, its confirmation on new seeds,
    the paired comparison with the baseline, and each serving format's latency, size and score."""
    runs = [r for r in results if "confirmation" in r or "serving_formats" in r]
    if not runs:
        return "No run has recorded its evidence yet (`benchmarks/tasks.py` from issue 23 on)."
    lines = []
    for r in runs:
        command = " ".join(["python benchmarks/tasks.py", r["name"], *r["overrides"]])
        low, high = (r.get("champion_ci") or [None, None])[:2]
        ci = f" (95% CI {low:.4f} to {high:.4f})" if low is not None else ""
        lines += [f"**`{command}`** ({r['machine']}, {r['date']}, {r['commit']}; {r['wall_seconds'] / 60:.1f} min, "
                  f"{r.get('confirmation_runs', 0)} confirmation run(s) beside {len(r['trials']) - r.get('confirmation_runs', 0)} "
                  f"trial(s)): champion {r['metric']} {_fmt(r['champion'])}{ci}, registered "
                  f"{r.get('registered')} as @{r.get('alias')}.", ""]
        if r.get("confirmation"):
            lines += [f"| configuration (trial) | mean {r['search_metric']} | standard deviation | runs | values | "
                      "champion |", "|---|---|---|---|---|---|"]
            for g in r["confirmation"]:
                chosen = "★" if str(g["trial"]) == str(r.get("confirmed_trial")) else ""
                values = ", ".join(f"{x['value']:.4f}" for x in g["runs"])
                lines.append(f"| {g['trial']} | {g['mean']:.4f} | {g['std']:.4f} | {g['completed']} of {g['planned']} "
                             f"| {values} | {chosen} |")
            lines.append("")
        if r.get("baseline_comparison"):
            lines += [f"Baseline: {r['baseline_comparison']}.", ""]
        if r.get("serving_formats"):
            metric = r["metric"]
            lines += [f"| format | batch 1 p50 / p95 ms | batch 32 p50 / p95 ms | MiB | {metric} | vs PyTorch | "
                      "threads |", "|---|---|---|---|---|---|---|"]
            for f in r["serving_formats"]:
                lines.append(f"| {f['format']} | {f['latency_b1_p50_ms']:.1f} / {f['latency_b1_p95_ms']:.1f} "
                             f"| {f['latency_b32_p50_ms']:.1f} / {f['latency_b32_p95_ms']:.1f} | {f['mb']:.1f} "
                             f"| {f[metric]:.4f} | {f[metric + '_vs_pytorch']:+.4f} | {f['threads']} |")
            base = next((f for f in r["serving_formats"] if f["format"] == "pytorch"), None)
            int8 = next((f for f in r["serving_formats"] if f["format"] == "int8"), None)
            if base and int8:
                ratio = int8["latency_b1_p50_ms"] / base["latency_b1_p50_ms"]
                drop = -int8[metric + "_vs_pytorch"]
                met = ratio <= 0.5 and drop <= 0.01
                lines += ["", f"int8 against PyTorch fp32 at batch 1: {ratio:.2f}x the latency (goal ≤ 0.5x), "
                              f"{metric} {'drop' if drop >= 0 else 'gain'} {abs(drop):.4f} (goal ≤ 0.01): "
                              f"{'met' if met else 'MISSED'}."]
            lines.append("")
    return "\n".join(lines)


def serving_section() -> str:
    """benchmarks/serving_formats.py: each registered champion's formats re-measured on a quiet machine."""
    files = sorted((RESULTS / "serving").glob("*.json"))
    if not files:
        return "Not measured yet: `python benchmarks/serving_formats.py <tasks.py folder> <experiment>`."
    lines = []
    for path in files:
        r = json.loads(path.read_text())
        metric = r["metric"]
        lines += [f"**{r['study']}** (`python benchmarks/serving_formats.py <folder> {Path(r['config']).name}`, model {r['model']}; "
                  f"{r['machine']}, {r['date']}, {r['commit']}; best of {r['formats'][0]['rounds']} rounds):", "",
                  f"| format | batch 1 p50 / p95 ms | batch 32 p50 / p95 ms | MiB | {metric} | vs PyTorch | threads |",
                  "|---|---|---|---|---|---|---|"]
        for f in r["formats"]:
            lines.append(f"| {f['format']} | {f['latency_b1_p50_ms']:.1f} / {f['latency_b1_p95_ms']:.1f} "
                         f"| {f['latency_b32_p50_ms']:.0f} / {f['latency_b32_p95_ms']:.0f} | {f['mb']:.1f} "
                         f"| {f[metric]:.4f} | {f[metric + '_vs_pytorch']:+.4f} | {f['threads']} |")
        base = next(f for f in r["formats"] if f["format"] == "pytorch")
        int8 = next((f for f in r["formats"] if f["format"] == "int8"), None)
        if int8:
            ratio = int8["latency_b1_p50_ms"] / base["latency_b1_p50_ms"]
            drop = -int8[metric + "_vs_pytorch"]
            lines += ["", f"int8 against PyTorch fp32: {ratio:.2f}x the latency at batch 1 (goal ≤ 0.5x: "
                          f"{'met' if ratio <= 0.5 else 'MISSED'}), "
                          f"{int8['latency_b32_p50_ms'] / base['latency_b32_p50_ms']:.2f}x at batch 32; {metric} "
                          f"{'drop' if drop >= 0 else 'gain'} {abs(drop):.4f} (goal ≤ 0.01: "
                          f"{'met' if drop <= 0.01 else 'MISSED'})."]
        lines.append("")
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


def _goal(value: float | None, goal: float, at_least: bool) -> str:
    if value is None:
        return "not measured"
    met = value >= goal if at_least else value <= goal
    return f"{value:.2f}x ({'meets' if met else 'misses'} the goal of {'≥' if at_least else '≤'} {goal}x)"


def trainer_table(r: dict) -> str:
    m, ratios, st = r["median"], r["ratios"], r["settings"]
    names = {"orchestrator": "orchestrator trial loop (length-grouped batches)",
             "orchestrator-shuffled": "orchestrator trial loop, `training.group_by_length=false`",
             "trainer-dynamic": "Trainer, `DataCollatorWithPadding`",
             "trainer-max-length": "Trainer, padding to max_length"}
    lines = [f"`python benchmarks/compare_trainer.py --rounds {st['rounds']} --epochs {st['epochs']}` on {r['device']} "
             f"({r['machine']}, {r['date']}, commit {r['commit']}): batch {st['batch_size']}, max length "
             f"{st['max_length']}, learning rate {st['learning_rate']}, {st['model']}; each figure the median of "
             f"{st['rounds']} fresh processes, the order alternating.",
             "",
             "| run | train samples/s | training s | process wall s | peak RSS MB | val macro-F1 | test macro-F1 |",
             "|---|---|---|---|---|---|---|"]
    for side, name in names.items():
        x = m[side]
        lines.append(f"| {name} | {x['train_samples_per_second']:.2f} | {x['train_seconds']:.1f} "
                     f"| {x['process_wall_seconds']:.1f} | {x['peak_rss_mb']:.0f} | {x['val_macro_f1']:.4f} "
                     f"| {x['test_macro_f1']:.4f} |")
    lines += ["",
              f"- throughput vs the Trainer padding to max_length: "
              f"{_goal(ratios['orchestrator_vs_trainer_max_length'], 1.3, True)}",
              f"- throughput vs the Trainer with dynamic padding: "
              f"{_goal(ratios['orchestrator_vs_trainer_dynamic'], 1.1, True)}",
              f"- length-grouped vs shuffled batches (same loop): {ratios['grouped_vs_shuffled']:.2f}x",
              f"- process wall time, orchestrator vs Trainer (dynamic): "
              f"{ratios['wall_orchestrator_vs_trainer_dynamic']:.2f}x"]
    return "\n".join(lines)


def search_table(r: dict) -> str:
    o, t = r["sides"]["orchestrator"], r["sides"]["trainer"]

    def states(side):
        seen = [x["state"] for x in side["trials"]]
        return ", ".join(f"{seen.count(s)} {s}" for s in dict.fromkeys(seen))

    def secs(v):
        return "never" if v is None else f"{v:.0f} s"

    shares = [x for x in o.get("overhead_shares", []) if x is not None]
    lines = [f"Earlier, two sides only, on the demo: `python benchmarks/compare_search.py --trials {r['trials']}` "
             f"as it was then (median pruning, one evaluation an epoch), on {r['device']} ({r['machine']}, "
             f"{r['date']}, commit {r['commit']}); common target: validation macro-F1 {r['common_target']:.4f} "
             f"(the lower of the two bests).",
             "",
             "| | orchestrator search | Trainer.hyperparameter_search |",
             "|---|---|---|",
             f"| trials | {states(o)} | {states(t)} |",
             f"| best validation macro-F1 | {o['best_validation']:.4f} | {t['best_validation']:.4f} |",
             f"| reached its own best after | {secs(o['seconds_to_own_best'])} | {secs(t['seconds_to_own_best'])} |",
             f"| reached the common target after | {secs(o['seconds_to_common_target'])} "
             f"| {secs(t['seconds_to_common_target'])} |",
             f"| search | {o['wall_seconds']:.0f} s (the whole command: data, baseline, trials, test, registry) "
             f"| {t['search_seconds']:.0f} s |",
             f"| getting the best model | included: registered as `@champion` | {t['retrain_seconds']:.0f} s to train "
             f"it again with the best hyperparameters |",
             f"| test macro-F1 of the model handed back | {o['test_macro_f1']:.4f} | {t['test_macro_f1']:.4f} |",
             f"| hands back | {o['hands_back']} | {t['hands_back']} |",
             "",
             f"- wall-clock to the common target, orchestrator / Trainer: "
             f"{_goal(r['ratios']['to_common_target'], 0.6, False)}",
             f"- whole command / (Trainer search + retrain): "
             f"{r['ratios']['whole_command_vs_search_plus_retrain']:.2f}x"]
    if shares:
        lines.append(f"- per-trial time outside training and evaluation steps (process start, loading, tracking, "
                     f"checkpoint): {', '.join(f'{x:.1%}' for x in shares)} (median "
                     f"{sorted(shares)[len(shares) // 2]:.1%}; goal ≤ 10%)")
    return "\n".join(lines)


SEARCH_SIDES = {"orchestrator": "orchestrator search", "trainer": "Trainer.hyperparameter_search",
                "ray": "Ray Tune (ASHA + OptunaSearch)"}
SEARCH_DATA = ("sms_spam", "sst2", "demo")


def search_runs_table(r: dict) -> str:
    """`compare_search.py` with its three sides and several seeds: one row per seed and side, then
    the ratios per seed and over the seeds."""
    st = r["settings"]
    rows = ", ".join(f"{v} {k}" for k, v in st["data"]["rows"].items())
    gpu = any(s.get("gpu_seconds") is not None for run in r["runs"] for s in run["sides"].values())

    def secs(v):
        return "never" if v is None else f"{v:.0f} s"

    def note(name, s):
        if name == "trainer":
            return (f"search {s['search_seconds']:.0f} s, then {s['retrain_seconds']:.0f} s to train the best "
                    f"again (validation {_fmt(s.get('retrain_validation'))})")
        if name == "ray":
            return f"search {s['search_seconds']:.0f} s, test of the best checkpoint {s['test_seconds']:.0f} s"
        return "the whole command: data, baseline, trials, test, registry"

    lines = [f"`{r['command']}` on {r['device']} ({r['machine']}, {r['date']}, commit {r['commit']}): "
             f"{r['data']} ({st['data']['source']}; {rows} rows; labels {', '.join(st['data']['labels'])}), "
             f"max length {st['recipe']['max_length']}, {st['trials']} trials a side, {st['evals_per_epoch']} "
             f"evaluations an epoch, pruning from {st['warmup_epochs']} epochs, reduction factor "
             f"{st['reduction_factor']}, {st['workers']} trial(s) at once; seeds {', '.join(map(str, st['seeds']))} "
             f"(sampler and model). Common target per seed: the lowest of the sides' best validation macro-F1; a "
             f"trial counts when it ends." + (f" Note: {r['note']}." if r.get("note") else ""),
             "",
             f"| seed | side | trials complete / pruned | best validation | reached the common target | wall time "
             f"| test macro-F1 of the model handed back | CPU-s |{' GPU-s |' if gpu else ''} notes |",
             f"|---|---|---|---|---|---|---|---|{'---|' if gpu else ''}---|"]
    for run in r["runs"]:
        for name, s in run["sides"].items():
            gpu_cell = f" {secs(s.get('gpu_seconds'))} |" if gpu else ""
            lines.append(f"| {run['seed']} | {SEARCH_SIDES.get(name, name)} | {s['completed']} / {s['pruned']} "
                         f"| {s['best_validation']:.4f} | {secs(s['seconds_to_common_target'])} "
                         f"(target {run['common_target']:.4f}) | {secs(s['wall_seconds'])} "
                         f"| {_fmt(s['test_macro_f1'])} | {_whole(s['cpu_seconds'])} |{gpu_cell} {note(name, s)} |")
    lines.append("")
    for run in r["runs"]:
        for key, x in run["ratios"].items():
            peer = SEARCH_SIDES[key.rsplit("_vs_", 1)[1]]
            time_to = "" if x["to_common_target"] is None else f"{x['to_common_target']:.2f}x"
            lines.append(f"- seed {run['seed']}, orchestrator / {peer}: time to the common target {time_to}, "
                         f"wall time {x['wall']:.2f}x, CPU-s {_times(x['cpu_seconds'])}, test macro-F1 "
                         f"{x['test_macro_f1_difference']:+.4f}")
    for key, x in r.get("summary", {}).items():
        peer = SEARCH_SIDES[key.rsplit("_vs_", 1)[1]]
        lines.append(f"- over {x['seeds']} seed(s), orchestrator / {peer}, time to the common target: geometric mean "
                     f"{_goal(x['to_common_target_geomean'], x['goal'], False)}, worst seed "
                     f"{x['to_common_target_worst']:.2f}x; champion tested at least as well in "
                     f"{x['seeds_test_at_least_peer']} of {x['seeds']} seed(s)")
    return "\n".join(lines)


def gpu_section(r: dict | None) -> str:
    if r is None:
        return "`bash benchmarks/gpu.sh` has not run yet."
    if r.get("skipped"):
        return (f"Not measured: {r['skipped']} (last run on {r['device']}, {r['date']}, commit {r['commit']}). "
                "No GPU has been lent to the sessions so far; `bash benchmarks/gpu.sh --prepare` here, then "
                "`bash benchmarks/gpu.sh` on a GPU machine.")
    lines = [f"`bash benchmarks/gpu.sh` on {r['gpu']['name']} ({r['gpu']['total_gib']:.0f} GiB), {r['date']}, commit "
             f"{r['commit']}; random weights (speed and memory only).", ""]
    if isinstance(r.get("probe"), list):
        lines += ["| model | max length | probe's batch | peak reserved / total | largest batch that fits "
                  "| probe / largest |", "|---|---|---|---|---|---|"]
        for p in r["probe"]:
            ratio = "" if p["batch_vs_largest"] is None else f"{p['batch_vs_largest']:.2f}"
            lines.append(f"| {p['model']} | {p['max_length']} | {p['batch']} | {p['peak_reserved_gib']:.1f} / "
                         f"{p['total_gib']:.1f} GiB ({p['peak_fraction']:.1%}) | {p['largest_that_fits']} | {ratio} |")
    for key, title in (("mfu_bert_base_128", "BERT-base trial at length 128"),
                       ("sharing_minilm_128", "two MiniLM trials sharing the GPU")):
        part = r.get(key)
        if part is None:
            continue
        if "error" in part:
            lines += ["", f"{title}: failed: {part['error']}"]
        elif key.startswith("mfu"):
            mfu = "" if part["mfu"] is None else f", MFU {part['mfu']:.1%} of {part['peak_tflops']:.0f} TFLOP/s"
            lines += ["", f"{title}: batch {part['batch']}, {part['samples_per_second']:.0f} samples/s, "
                          f"{part['achieved_tflops']:.0f} TFLOP/s{mfu} (goal ≥ 35%)"]
        else:
            lines += ["", f"{title}: together {part['together_total_samples_per_second']:.0f} samples/s vs "
                          f"{part['alone']['samples_per_second']:.0f} alone ({part['total_vs_alone']:.2f}x); two "
                          f"trials side by side took {part['two_trials_wall_vs_one_after_another']:.2f}x the time "
                          f"of running them one after the other"]
    return "\n".join(lines)


def perf_section() -> str:
    perf = RESULTS / "perf"
    parts = [trainer_table(json.loads(p.read_text())) for p in sorted(perf.glob("compare_trainer-*.json"))]
    searches = [json.loads(p.read_text()) for p in sorted(perf.glob("compare_search-*.json"))]
    done = {r["data"] for r in searches if "runs" in r}
    parts += [search_runs_table(r) for r in searches if "runs" in r]
    missing = [d for d in SEARCH_DATA if d not in done]
    if missing:
        parts.append("Not run yet: " + ", ".join(f"`python benchmarks/compare_search.py --data {d}`" for d in missing)
                     + " (orchestrator, Trainer.hyperparameter_search and Ray Tune with ASHA; 20 trials a side, "
                       "seeds 42 and 7).")
    parts += [search_table(r) for r in searches if "runs" not in r]  # the two-sided runs before the third peer
    gpu = perf / "gpu.json"
    parts.append("GPU: " + gpu_section(json.loads(gpu.read_text()) if gpu.exists() else None))
    return "\n\n".join(parts)


def _whole(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.0f}"


def _times(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.2f}x"


def _fmt_seconds(value: float | None) -> str:
    return "gone" if value is None else f"{value:.1f}"


def suite_section(r: dict | None) -> str:
    """The test suite before and after a change, from benchmarks/results/perf/test_suite.json
    (`benchmarks/test_suite.py compare`)."""
    if r is None:
        return "No comparison yet: `bash benchmarks/test_suite.sh` twice, then `python benchmarks/test_suite.py compare`."
    b, a = r["before"], r["after"]

    def quick(side):
        return (f"{side['quick_sum_seconds']:.0f} s ({side['quick_tests']} tests)" if "quick_sum_seconds" in side
                else "not counted")

    lines = [f"{r['machine']}, {r['date']}, Python {r['python']}, pytest-xdist {r['versions']['pytest-xdist']}; "
             "both runs one after the other with `bash benchmarks/test_suite.sh` (PostgreSQL started, "
             "`-n auto`: 2 workers).", "",
             "| | before | after |", "|---|---|---|",
             f"| commit | {b['commit']} | {a['commit']} |",
             f"| tests (passed / failed / skipped) | {b['tests']} ({b['passed']} / {b['failed']} / {b['skipped']}) "
             f"| {a['tests']} ({a['passed']} / {a['failed']} / {a['skipped']}) |",
             f"| **sum of test durations** | **{b['sum_seconds']:.0f} s** | **{a['sum_seconds']:.0f} s "
             f"({r['ratio']:.2f}x)** |",
             f"| wall time | {b['wall_seconds'] / 60:.1f} min | {a['wall_seconds'] / 60:.1f} min |",
             f"| the quick subset's share (`-m \"not slow and not cluster\"`, as marked in each) | {quick(b)} "
             f"| {quick(a)} |"]
    for folder in sorted(set(b["folders"]) | set(a["folders"])):
        lines.append(f"| `{folder}/` | {b['folders'].get(folder, 0):.0f} s | {a['folders'].get(folder, 0):.0f} s |")
    slowest = sorted(r["tests"], key=lambda t: -(t["before"] or 0))[:25]
    lines += ["", "The 25 slowest tests before, and the same tests after (seconds: setup + call + teardown):", "",
              "| test | before | after |", "|---|---|---|"]
    lines += [f"| `{t['test']}` | {t['before']:.1f} | {_fmt_seconds(t['after'])} |" for t in slowest]
    new = [t for t in r["tests"] if t["before"] is None]
    lines += ["", f"Tests only in the run after: {len(new)}, {sum(t['after'] for t in new):.0f} s in all. "
              f"Tests only in the run before: {len(r['only_before'])}"
              + (f" ({', '.join(r['only_before'])})." if r["only_before"] else ".")]
    return "\n".join(lines)


def _replace(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + body + "\n" + text[stop:]


def main() -> None:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    text = _replace(DOC.read_text(), "tasks", table(results))
    text = _replace(text, "evidence", evidence_section(results))
    text = _replace(text, "serving", serving_section())
    cluster = RESULTS / "cluster" / "cluster.json"
    if cluster.exists():
        text = _replace(text, "cluster", cluster_table(json.loads(cluster.read_text())))
    demo, chinese = RESULTS / "pretrain" / "demo.json", RESULTS / "chnsenticorp.json"
    text = _replace(text, "pretrain", pretrain_table(json.loads(demo.read_text()) if demo.exists() else None,
                                                     json.loads(chinese.read_text()) if chinese.exists() else None))
    objectives = [json.loads(p.read_text()) for p in sorted((RESULTS / "pretrain").glob("objectives-*.json"))]
    text = _replace(text, "pretrain-objectives", pretrain_objectives.table(objectives))
    text = _replace(text, "perf", perf_section())
    suite = RESULTS / "perf" / "test_suite.json"
    text = _replace(text, "suite", suite_section(json.loads(suite.read_text()) if suite.exists() else None))
    DOC.write_text(text)
    print(text[text.index("## Speed"):text.index("## Test suite")])


if __name__ == "__main__":
    main()
