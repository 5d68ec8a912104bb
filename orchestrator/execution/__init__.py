"""Where trials run: the job contract, this machine's slots, trial processes, local and Ray executors.

`job` is the `TrialJob`/`TrialOutcome` contract and the trial's events and questions; `slots`
divides this machine's GPUs or cores; `processes` runs a trial's process (`training.worker`);
`base` is the `Executor` interface, with `local` (child processes here) and `ray` (any node).
"""
