import numpy as np
import pytest
import torch

from orchestrator.config import DataConfig, ModelConfig, TrainingConfig
from orchestrator.data import load_splits
from orchestrator.models.heads import TextClassifier, load_encoder
from orchestrator.tasks.single_label.task import SingleLabel
from orchestrator.training.loop import train


@pytest.fixture
def splits(data_dir):
    return load_splits(DataConfig(train=str(data_dir / "train.csv"), validation=str(data_dir / "validation.csv"),
                                  test=str(data_dir / "test.csv")), SingleLabel())


def test_training_learns_and_keeps_the_best_epoch(splits, tiny_model):
    steps, evals = [], []
    params = TrainingConfig(epochs=4, learning_rate=2e-3, batch_size=16, head="mean", log_every=1)
    result = train(params, ModelConfig(), splits, str(tiny_model),
                   on_step=lambda s, m: steps.append((s, m)),
                   on_evaluate=lambda e, s, m: evals.append(m) or True)
    assert result.stopped is None and len(evals) == 4
    scores = [m["val_macro_f1"] for m in evals]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert result.best_metrics["val_macro_f1"] == max(scores)
    assert max(scores) > 0.5  # learnable synthetic data: well above chance (0.33)
    losses = [m["train_loss"] for _, m in steps]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert all("learning_rate" in m for _, m in steps)
    # The returned weights are the best epoch's: they reproduce its validation probabilities.
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    from orchestrator.data import tokenize
    from orchestrator.training.loop import collect_logits, model_inputs
    val = model_inputs(tokenize(splits, result.tokenizer, params.max_length, None, SingleLabel())["validation"])
    logits = collect_logits(result.model, DataLoader(val, batch_size=64,
                                                     collate_fn=DataCollatorWithPadding(result.tokenizer)))
    np.testing.assert_allclose(SingleLabel().gather(logits, None), result.val_outputs, atol=1e-5)


def test_evaluate_callback_can_stop_training(splits, tiny_model):
    result = train(TrainingConfig(epochs=3), ModelConfig(), splits, str(tiny_model),
                   on_evaluate=lambda e, s, m: False)
    assert result.stopped == "pruned" and len(result.history) == 1


def test_evaluations_inside_an_epoch_read_the_subsample_and_never_pick_the_best_epoch(splits, tiny_model):
    calls = []
    params = TrainingConfig(epochs=2, learning_rate=2e-3, batch_size=8, head="mean", evals_per_epoch=3,
                            eval_subsample=10)
    result = train(params, ModelConfig(), splits, str(tiny_model),
                   on_evaluate=lambda e, s, m: calls.append((e, s, m)) or True)
    assert [m["evaluation"] for _, _, m in calls] == [1, 2, 3, 4, 5, 6]  # the pruner's clock
    interim = [(e, m) for e, _, m in calls if "rows" in m]
    assert [round(e, 2) for e, _ in interim] == [0.33, 0.67, 1.33, 1.67] and all(m["rows"] == 10 for _, m in interim)
    ends = [m for e, _, m in calls if "rows" not in m]
    assert [e for e, _, m in calls if "rows" not in m] == [1, 2] and all("epoch_seconds" in m for m in ends)
    # The best epoch is chosen among the epochs' ends (whole validation split), whatever the interim scores.
    assert result.best_metrics["val_macro_f1"] == max(m["val_macro_f1"] for m in ends)
    assert result.best_epoch in (1, 2) and len(result.history) == 6


def test_a_prune_inside_the_first_epoch_stops_there(splits, tiny_model):
    steps = []
    result = train(TrainingConfig(epochs=3, batch_size=8, evals_per_epoch=2, log_every=1), ModelConfig(), splits,
                   str(tiny_model), on_step=lambda s, m: steps.append(s), on_evaluate=lambda e, s, m: False)
    assert result.stopped == "pruned" and len(result.history) == 1 and result.history[0]["interim"]
    assert result.best_epoch == 0 and result.history[0]["epoch"] == round(8 / 15, 4)  # 15 steps an epoch
    assert max(steps) == result.history[0]["step"]  # no training step after the decision


def test_interim_points_are_spread_evenly_and_the_subsample_is_fixed():
    from orchestrator.training.loop import interim_steps, interim_subsample
    assert interim_steps(10, 1) == {} and interim_steps(10, 2) == {5: 1} and interim_steps(9, 3) == {3: 1, 6: 2}
    assert interim_steps(1, 4) == {}  # one step an epoch: only the epoch's end
    # More evaluations than steps: each step evaluates once, numbered by the later point it holds,
    # so evaluation numbers keep meaning the same share of training in every trial.
    assert interim_steps(3, 5) == {1: 2, 2: 4}
    assert interim_subsample(5, None) == [0, 1, 2, 3, 4] and interim_subsample(5, 9) == [0, 1, 2, 3, 4]
    picked = interim_subsample(100, 10)
    assert picked == interim_subsample(100, 10) and len(set(picked)) == 10 and picked == sorted(picked)


def test_frozen_strategy_leaves_encoder_bit_identical(splits, tiny_model):
    original = load_encoder(str(tiny_model)).state_dict()
    result = train(TrainingConfig(epochs=1, strategy="frozen", learning_rate=1e-2), ModelConfig(), splits,
                   str(tiny_model))
    trained = result.model.state_dict()
    for k, v in original.items():
        if not k.startswith("pooler."):
            assert torch.equal(trained[f"encoder.{k}"], v), k
    fresh = TextClassifier(load_encoder(str(tiny_model)), 3)
    assert not torch.equal(trained["classifier.weight"], fresh.classifier.weight)


def test_resampling_balances_training_rows_only():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from orchestrator.data import Splits

    labels = np.array([0] * 50 + [1] * 10 + [2] * 5)
    train_split = Dataset.from_dict({"text": ["x"] * 65, "label": labels.tolist()},
                                    features=Features({"text": Value("string"), "label": ClassLabel(num_classes=3)}))
    splits = Splits(DatasetDict(train=train_split), ["a", "b", "c"])
    task = SingleLabel()
    over = task.train_rows(splits, TrainingConfig(imbalance="oversample", seed=0))
    under = task.train_rows(splits, TrainingConfig(imbalance="undersample", seed=0))
    assert np.bincount(labels[over]).tolist() == [50, 50, 50]
    assert np.bincount(labels[under]).tolist() == [5, 5, 5]
    assert set(over) == set(range(65))
    weights = task.loss_weights(splits, TrainingConfig(imbalance="class_weights"))
    assert weights[2] > weights[1] > weights[0]
    assert torch.isclose((weights * torch.tensor([50.0, 10.0, 5.0])).sum(), torch.tensor(65.0))


def test_partial_strategy_freezes_embeddings_and_bottom_layers_only(splits, tiny_model):
    original = load_encoder(str(tiny_model)).state_dict()
    result = train(TrainingConfig(epochs=1, strategy="partial", freeze_layers=1, learning_rate=1e-2), ModelConfig(),
                   splits, str(tiny_model))
    trained = result.model.state_dict()
    changed = {k for k, v in original.items() if not k.startswith("pooler.")
               and not torch.equal(trained[f"encoder.{k}"], v)}
    assert not any(k.startswith(("embeddings.", "encoder.layer.0.")) for k in changed), changed
    assert any(k.startswith("encoder.layer.1.") for k in changed)
    assert result.trainable_parameters < sum(p.numel() for p in TextClassifier(load_encoder(str(tiny_model)), 3)
                                            .parameters())


@pytest.mark.parametrize("method", ["oversample", "undersample"])
def test_resampling_changes_train_counts_and_never_validation(tmp_path, tiny_model, method):
    from conftest import make_rows, write_csv
    rows = make_rows(150, seed=9, weights=[0.7, 0.2, 0.1])
    path = write_csv(tmp_path / "imb.csv", rows)
    s = load_splits(DataConfig(train=str(path), seed=1), SingleLabel())
    before = {k: s.class_counts(k) for k in ("train", "validation", "test")}
    result = train(TrainingConfig(epochs=1, imbalance=method), ModelConfig(), s, str(tiny_model))
    counts = set(result.class_counts.values())
    assert len(counts) == 1  # balanced
    expected = max(before["train"].values()) if method == "oversample" else min(before["train"].values())
    assert counts == {expected}
    assert {k: s.class_counts(k) for k in ("train", "validation", "test")} == before
    assert len(result.val_outputs) == sum(before["validation"].values())


def test_non_finite_loss_stops_the_trial_at_once(splits, tiny_model, monkeypatch):
    import orchestrator.tasks.single_label.task as train_mod

    real = train_mod.F.cross_entropy
    calls = []

    def poisoned(*args, **kwargs):  # the third batch's loss blows up
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", poisoned)
    # The loss is read every `log_every` steps (no host-device sync per step): caught at step 4.
    result = train(TrainingConfig(epochs=3, log_every=4), ModelConfig(), splits, str(tiny_model))
    assert result.stopped.startswith("non-finite loss") and "steps 1-4" in result.stopped
    assert len(calls) == 4 and result.history == [] and result.best_epoch == 0
