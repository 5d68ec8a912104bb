"""The pre-training stage: masked-language-model training of an encoder on unlabeled text.

`corpus` reads the text and holds some out; `scratch` builds a new encoder and tokenizer;
`masking` masks tokens (or whole words); `loop` trains with Accelerate and knows nothing of
MLflow; `stage` runs it all for an experiment, logs it and registers the encoder.
"""
