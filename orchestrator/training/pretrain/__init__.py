"""Masked-language-model pre-training of an encoder on unlabeled text (run as a stage by `search/`).

`corpus` reads the text and holds some out; `scratch` builds a new encoder and tokenizer;
`masking` masks tokens (or whole words); `loop` trains with Accelerate and knows nothing of
MLflow; `search/pretrain_stage.py` runs it all for an experiment, logs it and registers the encoder.
"""
