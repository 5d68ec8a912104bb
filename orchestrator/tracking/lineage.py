"""What a run was made from, in MLflow's own terms: its data as dataset inputs, and the code.

Every study run and trial run gets one MLflow dataset input per split (`MlflowClient.log_inputs`):
named `<split>` of the study's data, its digest the split's fingerprint (the rows as read and
carved: the same digest means the same rows), its source the file or hub dataset it came from,
and a profile with the row count. MLflow's UI lists them on the run's page and in the
experiment's "Dataset" column. Only metadata is logged, never the rows.

The code version is the git commit of this package's checkout when it is one (MLflow's own tag
`mlflow.source.git.commit`, with `+dirty` in `code_version` when files differ from it), else the
installed package's version.
"""

from __future__ import annotations

import functools
import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_COMMIT

CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}
CODE_TAG = "code_version"


def dataset_inputs(datasets: list[dict]) -> list[DatasetInput]:
    """MLflow dataset inputs from plain records: {split, digest, source, rows} (`source` a file
    location, `s3://` URL or `hub:<name>`)."""
    out = []
    for d in datasets:
        source = str(d["source"])
        kind = "hugging_face" if source.startswith("hub:") else "s3" if source.startswith("s3://") else "local"
        dataset = Dataset(name=d["split"], digest=d["digest"], source_type=kind, source=json.dumps({"uri": source}),
                          profile=json.dumps({"num_rows": d["rows"]}))
        out.append(DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS.get(d["split"], d["split"]))]))
    return out


def log_datasets(client: MlflowClient, run_id: str, datasets: list[dict]) -> None:
    if datasets:
        client.log_inputs(run_id, datasets=dataset_inputs(datasets))


@functools.cache
def code_version() -> dict[str, str]:
    """Tags naming the code: `code_version` (`git:<commit>[+dirty]` or `orchestrator <version>`),
    and MLflow's `mlflow.source.git.commit` when the package runs from a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        # This package's own checkout only: an installed copy inside another repository (a project's
        # .venv) must not report that project's commit as this code's.
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() if top and Path(top).resolve() == root else ""
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip()) if commit else False
    except (OSError, subprocess.SubprocessError):  # no git here: the package's version says what runs
        commit, dirty = "", False
    if len(commit) == 40:
        return {CODE_TAG: f"git:{commit}{'+dirty' if dirty else ''}", MLFLOW_GIT_COMMIT: commit}
    try:
        return {CODE_TAG: f"orchestrator {version('orchestrator')}"}
    except PackageNotFoundError:
        return {CODE_TAG: "orchestrator (version unknown)"}
