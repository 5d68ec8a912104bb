import pytest
import torch
from transformers import BertConfig, BertModel

from orchestrator.config import HEADS
from orchestrator.models.heads import HeadError, TextClassifier, load_encoder, load_tokenizer


def _batch(tokenizer):
    return dict(tokenizer(["great product", "awful day and bad service"], padding=True, return_tensors="pt"))


@pytest.mark.parametrize("head", HEADS)
def test_every_head_round_trips_through_its_saved_folder(head, tiny_model, tmp_path):
    torch.manual_seed(0)
    model = TextClassifier(load_encoder(str(tiny_model)), 3, head=head, mlp_hidden=16).eval()
    tok = load_tokenizer(str(tiny_model))
    batch = _batch(tok)
    with torch.no_grad():
        before = model(**batch)
    assert before.shape == (2, 3)
    model.save(tmp_path / head, tok, {"label_names": ["a", "b", "c"], "max_length": 32})
    loaded, tok2, info = TextClassifier.load(tmp_path / head)
    with torch.no_grad():
        after = loaded(**_batch(tok2))
    torch.testing.assert_close(after, before)
    assert info["head"] == head
    saved = {p.name for p in (tmp_path / head).rglob("*") if p.is_file()}
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".pth")) for n in saved), saved


def test_mean_head_ignores_padding(tiny_model):
    model = TextClassifier(load_encoder(str(tiny_model)), 2, head="mean").eval()
    tok = load_tokenizer(str(tiny_model))
    alone = tok(["great product"], return_tensors="pt")
    padded = tok(["great product", "a much longer text that forces padding here"], padding=True,
                 return_tensors="pt")
    with torch.no_grad():
        a = model(**alone)
        b = model(**padded)[:1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_pooler_head_needs_a_pooler():
    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32), add_pooling_layer=False)
    with pytest.raises(HeadError, match="has no pooler"):
        TextClassifier(encoder, 2, head="pooler")


def test_saved_heads_predict_the_same_in_a_fresh_process(tiny_model, tmp_path):
    """Loading needs only this package: a new interpreter reproduces the outputs of every head."""
    import json
    import subprocess
    import sys

    tok = load_tokenizer(str(tiny_model))
    expected = {}
    for head in HEADS:
        torch.manual_seed(1)
        model = TextClassifier(load_encoder(str(tiny_model)), 2, head=head, mlp_hidden=8).eval()
        with torch.no_grad():
            expected[head] = model(**_batch(tok)).tolist()
        model.save(tmp_path / head, tok, {"label_names": ["a", "b"], "max_length": 32})
    code = (
        "import json, sys, torch\n"
        "from orchestrator.models.heads import TextClassifier\n"
        "out = {}\n"
        "for h in %r:\n"
        "    m, t, _ = TextClassifier.load(sys.argv[1] + '/' + h)\n"
        "    b = dict(t(['great product', 'awful day and bad service'], padding=True, return_tensors='pt'))\n"
        "    with torch.no_grad(): out[h] = m(**b).tolist()\n"
        "print(json.dumps(out))\n" % (list(HEADS),)
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for head in HEADS:
        torch.testing.assert_close(torch.tensor(got[head]), torch.tensor(expected[head]))


def test_attention_kernel_is_sdpa_unless_told_and_flash_only_where_installed(tiny_model, monkeypatch):
    import importlib.util

    from orchestrator.models.heads import attention_kernel

    assert attention_kernel("auto", cuda=False) is None  # transformers' choice: SDPA where the model has it
    assert attention_kernel("eager", cuda=False) == "eager"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "flash_attn" else real(name))
    assert attention_kernel("auto", cuda=True) is None  # no flash-attn installed: SDPA
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else real(name))
    assert attention_kernel("auto", cuda=True) == "flash_attention_2"
    assert load_encoder(str(tiny_model)).config._attn_implementation == "sdpa"
    assert load_encoder(str(tiny_model), attention="eager").config._attn_implementation == "eager"
