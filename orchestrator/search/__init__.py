"""The driver: an Optuna study whose trials run on an executor; the only package that calls Optuna.

`driver` runs a search end to end; `preflight` checks everything before anything is created;
`study` is the storage, budget lock, sampling and recovery of dead trials; `launcher` hands a trial
to an executor and answers its questions (prune? keep the checkpoint?); `interrupts` handles Ctrl-C;
`wrap_up` tests and registers the champion; `confirm` trains the best configurations again on new
seeds; `evidence` keeps test predictions, bootstrap intervals and paired comparisons;
`serving_formats` exports and measures ONNX and int8; `objectives` is the Pareto front of
`search.objectives`; `pretrain_stage` runs pre-training as a stage.
"""
