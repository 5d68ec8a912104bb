"""The Ray Tune side of `compare_search.py`: the same search as Ray's docs build it.

`tune.Tuner` over a function trainable, `OptunaSearch` (TPE, seeded) proposing the points and
`ASHAScheduler` stopping trials, `time_attr` the evaluation count: rungs at `grace_period`
evaluations, x `reduction_factor` each, the same numbers orchestrator's successive halving gets
(`search.pruner_warmup_epochs` x `training.evals_per_epoch` and `search.pruner_options`). Each
trial fine-tunes with `transformers.Trainer`, the very recipe of the Trainer side
(`hf_trainer.build`: model, tokenization, dynamic padding, optimizer, schedule, seed), evaluates
`evals_per_epoch` times an epoch on the whole validation split and reports each evaluation with
`ray.tune.report`; at an epoch's end that improves on the trial's best it reports a checkpoint
too (the model and tokenizer), and Ray keeps each trial's best one (`CheckpointConfig`). What
the side hands back is the best of those checkpoints over all trials (a trial ASHA stopped after
an epoch's end counts: Ray keeps its checkpoint), tested here on the test split.

Ray runs on this machine: `ray.init(num_cpus=<cores>)`, `cpus_per_trial` CPUs a trial (and its
torch threads), at most `workers` trials at once, like orchestrator's `--workers`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hf_trainer  # noqa: E402 - model, data and recipe of the Trainer side

METRIC = "val_macro_f1"  # every evaluation: what ASHA and OptunaSearch read
EPOCH_METRIC = "epoch_val_macro_f1"  # an epoch's end only: what the checkpoints are ranked by


def _reporter(tokenizer, started: float):
    """A TrainerCallback: each evaluation to Ray Tune, with a checkpoint at an epoch's end that
    beats the trial's best so far."""
    from ray import tune
    from transformers import TrainerCallback

    class _Report(TrainerCallback):
        def __init__(self):
            self.evaluations, self.at_epoch_end, self.best = 0, False, None

        def on_epoch_end(self, args, state, control, **kwargs):  # comes before the epoch's evaluation
            self.at_epoch_end = True

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            self.evaluations += 1
            score = float(metrics["eval_macro_f1"])
            report = {METRIC: score, "evaluation": self.evaluations, "epoch_float": float(state.epoch or 0),
                      "started_wall": started, "wall": time.time()}
            if not self.at_epoch_end:
                tune.report(report)
                return
            self.at_epoch_end = False
            report[EPOCH_METRIC] = score
            if self.best is not None and score <= self.best:
                tune.report(report)
                return
            self.best = score
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                tokenizer.save_pretrained(folder)
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))

    return _Report()


def trainable(config: dict, splits=None, model_path: str = "", recipe: dict | None = None,
              evals_per_epoch: int = 1, threads: int = 1, scratch: str | None = None) -> None:
    import torch
    from transformers import AutoTokenizer

    started = time.time()
    torch.set_num_threads(threads)
    # model_init: the Trainer seeds, then builds the model (the head's initialisation is seeded),
    # as under hyperparameter_search.
    trainer, _, _ = hf_trainer.build(splits, model_path, "dynamic", learning_rate=config["learning_rate"],
                                     epochs=config["epochs"], batch_size=config["batch_size"], model_init=True,
                                     output_dir=tempfile.mkdtemp(prefix="trial-", dir=scratch), **recipe)
    trainer.add_callback(hf_trainer.InterimEvaluations(evals_per_epoch))
    trainer.add_callback(_reporter(AutoTokenizer.from_pretrained(model_path), started))
    trainer.train()


def run(plan: dict, folder: Path, t0: float) -> dict:
    """One Ray Tune search per `plan` (compare_search.py writes it); times from `t0`."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # the machine may be offline
    # Workers import this module and hf_trainer by name; the project for orchestrator's Splits.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    import ray
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    seed, space, evals = plan["seed"], plan["space"], plan["evals_per_epoch"]
    recipe = {**plan["recipe"], "seed": seed}
    _, splits, model_path = hf_trainer.experiment_splits(plan["config"], plan.get("data_overrides", []))
    param_space = {"learning_rate": tune.loguniform(*space["learning_rate"]),
                   "epochs": tune.randint(space["epochs"][0], space["epochs"][1] + 1),  # upper bound excluded
                   "batch_size": tune.choice(space["batch_size"])}
    max_t = space["epochs"][1] * evals
    grace = max(1, round(plan["warmup_epochs"] * evals))
    cpus = plan["ray_cpus_per_trial"]
    gpus = 1 if torch.cuda.is_available() else 0

    scratch = folder / "trials"  # the Trainers' output_dir (they write nothing there: save_strategy "no")
    scratch.mkdir(exist_ok=True)
    ray.init(num_cpus=plan["cores"], include_dashboard=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, splits=splits, model_path=model_path, recipe=recipe,
                                                     evals_per_epoch=evals, threads=cpus, scratch=str(scratch)),
                                {"cpu": cpus, "gpu": gpus}),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", num_samples=plan["trials"], max_concurrent_trials=plan["workers"],
                search_alg=OptunaSearch(seed=seed),
                scheduler=ASHAScheduler(time_attr="evaluation", max_t=max_t, grace_period=grace,
                                        reduction_factor=plan["reduction_factor"], brackets=1)),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(folder / "ray"),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=EPOCH_METRIC,
                                                        checkpoint_score_order="max")))
        results = tuner.fit()
        searched = time.time() - t0
        trials, best = [], None  # best: (score, checkpoint, config)
        for number, result in enumerate(sorted(results, key=_started)):
            frame = result.metrics_dataframe
            reports = [] if frame is None else frame.to_dict("records")
            epochs = result.config.get("epochs")
            last = int(reports[-1]["evaluation"]) if reports else 0
            ends = [r[EPOCH_METRIC] for r in reports if r.get(EPOCH_METRIC) == r.get(EPOCH_METRIC)
                    and r.get(EPOCH_METRIC) is not None]  # NaN where an interim report lacks it
            value = max(ends) if ends else None
            state = "ERROR" if result.error else "COMPLETE" if last >= epochs * evals else "STOPPED"
            trials.append({"number": number, "state": state, "value": value, "counts": value is not None,
                           "last_value": reports[-1][METRIC] if reports else None, "evaluations": last,
                           "params": dict(result.config),
                           "started_s": round(reports[0]["started_wall"] - t0, 1) if reports else None,
                           "ended_s": round(reports[-1]["wall"] - t0, 1) if reports else None})
            for checkpoint, metrics in result.best_checkpoints:
                score = metrics.get(EPOCH_METRIC)
                if score is not None and (best is None or score > best[0]):
                    best = (score, checkpoint, dict(result.config))
        if best is None:
            raise RuntimeError("no trial reached an epoch's end: nothing to hand back")
        test_start = time.time()
        with best[1].as_directory() as checkpoint:
            tester, data, _ = hf_trainer.build(splits, checkpoint, "dynamic", learning_rate=1e-4, epochs=1,
                                               batch_size=16, output_dir=str(folder / "ray-test"), **recipe)
            test = tester.evaluate(data["test"], metric_key_prefix="test")
    finally:
        ray.shutdown()
    return {"trials": trials, "best_validation": best[0], "best_params": best[2],
            "search_seconds": round(searched, 1), "test_seconds": round(time.time() - test_start, 1),
            "test_macro_f1": test["test_macro_f1"],
            "settings": {"asha": {"time_attr": "evaluation", "max_t": max_t, "grace_period": grace,
                                  "reduction_factor": plan["reduction_factor"], "brackets": 1},
                         "searcher": f"OptunaSearch(seed={seed}) (its default TPESampler)",
                         "cpus_per_trial": cpus, "gpus_per_trial": gpus, "max_concurrent_trials": plan["workers"],
                         "ray_version": ray.__version__},
            "hands_back": "a ResultGrid; the best checkpoint over all trials (each trial keeps its best epoch's, "
                          "model and tokenizer) is the model, tested here on the test split"}


def _started(result) -> float:
    frame = result.metrics_dataframe
    return float(frame["started_wall"].iloc[0]) if frame is not None and len(frame) else float("inf")
