"""Where trials run: the `TrialJob`/`TrialOutcome` contract (`job`), this machine's slots
(`slots`), trial processes (`processes`, `worker`), and the executors behind the `Executor`
interface (`base`): `local` (child processes here) and `ray` (Ray tasks on any node)."""
