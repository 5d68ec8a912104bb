"""A new encoder when no pretrained one can be had: a WordPiece tokenizer trained on the corpus
and a small BERT of the configured size with random weights.

The tokenizer normalises and splits as BERT's own does: each Chinese (CJK) character becomes a
word of its own, so Chinese text gets a character-level vocabulary (as `bert-base-chinese` has),
while words of other scripts get word pieces.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import PretrainConfig

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(texts: list[str], vocab_size: int, folder: Path):
    """A BERT WordPiece tokenizer learned from `texts`, saved into `folder`; returns it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                                             min_frequency=2, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return fast


def new_config(p: PretrainConfig, tokenizer):
    """The `BertConfig` of the sizes in `p`, for `tokenizer`'s vocabulary."""
    from transformers import BertConfig

    return BertConfig(vocab_size=len(tokenizer), hidden_size=p.hidden_size, num_hidden_layers=p.num_layers,
                      num_attention_heads=p.num_heads, intermediate_size=p.intermediate_size,
                      max_position_embeddings=p.max_positions, pad_token_id=tokenizer.pad_token_id)


def new_model(p: PretrainConfig, tokenizer):
    """A BERT with a masked-LM head, of the sizes in `p`, randomly initialised (seeded by the caller)."""
    from transformers import BertForMaskedLM

    return BertForMaskedLM(new_config(p, tokenizer))


def new_encoder(p: PretrainConfig, tokenizer):
    """A plain BERT encoder (no head), of the sizes in `p`: ELECTRA's discriminator."""
    from transformers import BertModel

    return BertModel(new_config(p, tokenizer), add_pooling_layer=False)
