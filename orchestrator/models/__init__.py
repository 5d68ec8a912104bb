"""Encoders and heads: where a model comes from, the classification heads, the saved model.

`sources` resolves `model.name_or_path` (a hub name, a folder, `pkg://`) and checks its files;
`heads` builds the encoder with the experiment's head and loads its tokenizer.
"""
