"""Pre-training of an encoder on unlabeled text, masked-LM or ELECTRA (run as a stage by `search/`).

`corpus` reads the text and holds some out; `scratch` builds a new encoder and tokenizer;
`masking` masks tokens (or whole words); `electra` pairs the encoder with a small generator for
ELECTRA's replaced-token detection (`pretrain.objective: electra`); `loop` trains with
Accelerate and knows nothing of MLflow; `search/pretrain_stage.py` runs it all for an experiment, logs it and registers the encoder.
"""
