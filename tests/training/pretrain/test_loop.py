"""The masked-LM loop on a tiny corpus: the held-out loss falls; the budget ends it."""

from __future__ import annotations

import math

import pytest

from orchestrator.config.schema import PretrainConfig
from orchestrator.training.pretrain import loop, masking, scratch

from .conftest import TINY, chinese_reviews


def _settings(**changes) -> loop.Settings:
    p = PretrainConfig(**{k: v for k, v in TINY.items() if k != "init"})
    values = dict(max_steps=p.max_steps, max_minutes=None, batch_size=p.batch_size, learning_rate=p.learning_rate,
                  weight_decay=0.0, warmup_ratio=0.0, mlm_probability=0.15, whole_words=False, eval_every=10,
                  save_every=1000, log_every=5, seed=1)
    return loop.Settings(**{**values, **changes})


def _setup(tmp_path, whole_words: bool = False):
    import torch

    texts = [r["text"] for r in chinese_reviews(300, 5)]
    tok = scratch.train_tokenizer(texts[:270], 300, tmp_path / "tok")
    torch.manual_seed(0)
    model = scratch.new_model(PretrainConfig(**{k: v for k, v in TINY.items() if k != "init"}), tok)
    return (model, tok, masking.encode(texts[:270], tok, 32, whole_words),
            masking.encode(texts[270:], tok, 32, whole_words))


@pytest.mark.parametrize("whole_words", [False, True])
def test_held_out_mlm_loss_falls_on_a_tiny_corpus(tmp_path, whole_words):
    model, tok, train_rows, held = _setup(tmp_path, whole_words)
    logged = []
    result = loop.pretrain_mlm(model, tok, train_rows, held, _settings(max_steps=60, whole_words=whole_words,
                                                                      learning_rate=5e-3),
                               tmp_path / "run", on_log=lambda step, m: logged.append((step, m["train_loss"])))
    losses = [h["eval_loss"] for h in result.history]
    assert result.step == 60 and result.stopped_by == "max_steps" and len(losses) == 7  # steps 0, 10, ... 60
    # Random weights guess among the whole vocabulary (loss near log(vocab)); after 60 steps on
    # this repetitive text the model must do much better.
    assert losses[0] > 0.8 * math.log(len(tok))
    assert losses[-1] < losses[0] - 0.5, losses
    assert result.perplexity == pytest.approx(math.exp(losses[-1]))
    assert [s for s, _ in logged] == list(range(5, 61, 5))


def test_max_minutes_ends_the_run_and_a_second_run_continues_the_count(tmp_path):
    model, tok, train_rows, held = _setup(tmp_path)
    folder = tmp_path / "run"
    first = loop.pretrain_mlm(model, tok, train_rows, held, _settings(max_steps=None, max_minutes=0.05), folder)
    assert first.stopped_by == "max_minutes" and first.step > 0 and first.minutes >= 0.05
    # The same folder again: its checkpoint is where the run stopped; with a larger budget it goes on from there.
    model2, *_ = _setup(tmp_path)
    second = loop.pretrain_mlm(model2, tok, train_rows, held, _settings(max_steps=first.step + 5), folder)
    assert second.resumed_from == first.step and second.step == first.step + 5
