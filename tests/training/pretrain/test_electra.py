"""ELECTRA's pair on tiny models: the replaced-token labels, the shared embeddings, the loss
falling, resuming, and a checkpoint of the other objective refused."""

from __future__ import annotations

import pytest
import torch

from orchestrator.config.schema import PretrainConfig
from orchestrator.training.pretrain import electra, loop, masking, scratch

from .conftest import TINY, chinese_reviews

P = PretrainConfig(**{k: v for k, v in TINY.items() if k != "init"}, objective="electra")


def _settings(**changes) -> loop.Settings:
    values = dict(max_steps=40, max_minutes=None, batch_size=16, learning_rate=5e-3, weight_decay=0.0,
                  warmup_ratio=0.0, mlm_probability=0.15, whole_words=False, eval_every=10, save_every=1000,
                  log_every=5, seed=1, objective="electra")
    return loop.Settings(**{**values, **changes})


@pytest.fixture
def corpus(tmp_path):
    texts = [r["text"] for r in chinese_reviews(300, 5)]
    tok = scratch.train_tokenizer(texts[:270], 300, tmp_path / "tok")
    return tok, masking.encode(texts[:270], tok, 32, False), masking.encode(texts[270:], tok, 32, False)


def _pair(tok, seed: int = 0) -> electra.ElectraPair:
    torch.manual_seed(seed)
    encoder = scratch.new_encoder(P, tok)
    return electra.ElectraPair(electra.new_generator(encoder.config, None), encoder, 50.0, seed=1)


def test_replaced_labels_mark_changed_tokens_and_nothing_else():
    original = torch.tensor([[2, 10, 11, 12, 3, 0, 0]])
    corrupted = torch.tensor([[2, 10, 15, 12, 3, 0, 0]])  # position 3 was masked and sampled back as 12
    attention = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    assert electra.replaced_labels(original, corrupted, attention).tolist() == [[0, 0, 1, 0, 0, 0, 0]]
    # Padding never counts as replaced, even where the ids differ.
    assert electra.replaced_labels(original, torch.tensor([[2, 10, 11, 12, 3, 7, 7]]), attention).sum() == 0


@pytest.mark.parametrize("sampled, replaced", [("original", 0), ("other", 3)])
def test_the_discriminator_is_told_replaced_only_where_the_sample_differs(corpus, monkeypatch, sampled, replaced):
    tok, rows, _ = corpus
    pair = _pair(tok)
    ids = torch.tensor([[2, 20, 21, 22, 23, 3, 0, 0]])
    labels = torch.full_like(ids, -100)
    labels[0, 1:4] = ids[0, 1:4]  # three tokens masked
    masked_input = ids.clone()
    masked_input[0, 1:4] = tok.mask_token_id
    draw = ids[0, 1:4] if sampled == "original" else (ids[0, 1:4] + 1)
    monkeypatch.setattr(pair, "_sample", lambda logits: draw)
    out = pair(input_ids=masked_input, attention_mask=(ids != 0).long(), labels=labels)
    assert out.counts["masked"] == 3 and out.counts["tokens"] == 6  # padding left out
    assert out.counts["replaced"] == replaced
    assert out.loss.item() == pytest.approx((out.generator_loss + 50.0 * out.discriminator_loss).item())


def test_generator_and_discriminator_share_the_same_embedding_parameters(corpus, tiny_model):
    from transformers import AutoModel

    tok, *_ = corpus
    for encoder in (scratch.new_encoder(P, tok), AutoModel.from_pretrained(tiny_model)):
        generator = electra.new_generator(encoder.config, None)
        pair = electra.ElectraPair(generator, encoder, 50.0)
        assert pair.shared == ["word_embeddings", "position_embeddings", "token_type_embeddings"]
        ours, theirs = generator.base_model.embeddings, encoder.embeddings
        for name in pair.shared:
            assert getattr(ours, name).weight is getattr(theirs, name).weight
        assert generator.get_output_embeddings().weight is theirs.word_embeddings.weight  # tied decoder
        assert generator.config.num_hidden_layers == 1  # a third of 1 (scratch) or 2 (tiny_model) layers
        # Counted once: the optimizer must not see (and decay) the shared tables twice.
        names = [n for n, _ in pair.named_parameters()]
        assert sum("word_embeddings" in n for n in names) == 1


def test_an_encoder_electra_cannot_pair_with_is_named_with_the_key():
    from transformers import BertConfig, GPT2Config

    assert "pretrain.objective" in electra.unsupported(GPT2Config(), None)
    assert "pretrain.generator_layers (3)" in electra.unsupported(BertConfig(num_hidden_layers=2), 3)
    assert electra.unsupported(BertConfig(num_hidden_layers=6), 2) is None
    assert electra.default_generator_layers(12) == 4 and electra.default_generator_layers(1) == 1


def test_electra_loss_falls_on_a_tiny_corpus(tmp_path, corpus):
    tok, rows, held = corpus
    logged = []
    result = loop.pretrain_mlm(_pair(tok), tok, rows, held, _settings(), tmp_path / "run",
                               on_log=lambda step, m: logged.append(m), measures=electra.measures(50.0))
    first, last = result.history[0], result.history[-1]
    assert result.step == 40 and [h["step"] for h in result.history] == [0, 10, 20, 30, 40]
    assert last["eval_loss"] < first["eval_loss"] - 5, result.history
    assert last["eval_generator_loss"] < first["eval_generator_loss"]
    assert last["eval_rtd_loss"] < first["eval_rtd_loss"] and last["eval_rtd_accuracy"] > first["eval_rtd_accuracy"]
    assert 0 < last["eval_replaced_share"] < 0.3 and result.metrics == {k: v for k, v in last.items() if k != "step"}
    assert {"train_loss", "generator_loss", "discriminator_loss", "replaced_accuracy"} <= set(logged[-1])


def test_a_resumed_electra_run_continues_from_its_step_and_an_mlm_checkpoint_is_refused(tmp_path, corpus):
    tok, rows, held = corpus
    folder = tmp_path / "run"
    first = loop.pretrain_mlm(_pair(tok), tok, rows, held, _settings(max_steps=10, save_every=10), folder,
                              measures=electra.measures(50.0))
    saved = _last_state(folder)
    second_pair = _pair(tok, seed=7)  # other random weights: the checkpoint must replace them
    second = loop.pretrain_mlm(second_pair, tok, rows, held, _settings(max_steps=15), folder,
                               measures=electra.measures(50.0))
    assert first.step == 10 and second.resumed_from == 10 and second.step == 15
    assert second.history[0]["step"] == 15  # no step-0 evaluation on a resumed run
    # The resumed pair started from the checkpoint, not its own initialisation: the weights the
    # first run saved, trained 5 steps further (the RTD head is not shared with anything).
    head = second_pair.rtd_head.weight.detach()
    assert not torch.equal(head, saved["rtd_head.weight"]) and torch.dist(head, saved["rtd_head.weight"]) < 0.5

    mlm = scratch.new_model(P, tok)
    with pytest.raises(loop.PretrainError, match="holds a electra pre-training, not mlm"):
        loop.pretrain_mlm(mlm, tok, rows, held, _settings(max_steps=20, objective="mlm"), folder)


def _last_state(folder) -> dict:
    from safetensors.torch import load_file

    (weights,) = (folder / loop.STATE).glob("model*.safetensors")
    state = load_file(weights)
    assert any(k.startswith("generator.") for k in state) and any(k.startswith("rtd_head.") for k in state)
    return state
