"""One fine-tune: the task-agnostic Accelerate loop, the batch-size probe, the trial's process, ONNX export.

`loop` trains and evaluates (it knows nothing of Optuna or MLflow); `probe` finds the largest batch
that fits the GPU; `trial` is one trial's body and `worker` its process; `saved_model` loads a
checkpoint for predictions; `pretrain/` is masked-LM pre-training.
"""
