"""orchestrator: the best fine-tuned transformer for your labelled data, found by one command.

`python -m orchestrator search` runs an Optuna study whose trials fine-tune an encoder with
Accelerate, tracks it in MLflow and registers the best trial's model as `@champion`.
"""
