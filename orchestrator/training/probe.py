"""The batch-size probe: the largest per-device batch whose peak memory stays under a budget.

`find_max_batch` is the search, independent of any device: grow the batch geometrically until a
measurement fails (out of memory) or exceeds the budget, then bisect between the last good and
the first bad size. `cuda_measure` is the measurement on a GPU: one worst-case step (every row at
max length) through forward, backward and optimizer step, read with `max_memory_reserved`.
On CPU there is no probe: configured batch sizes are used as given. The `probe` command is
`orchestrator.search.probe_command`.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Callable

from accelerate.utils.memory import should_reduce_batch_size

Measure = Callable[[int], int]  # batch size -> peak bytes; raises on out-of-memory


@dataclass
class ProbeResult:
    batch_size: int  # largest size measured at or under the budget (0: not even 1 fits)
    peak_bytes: int  # its measured peak
    total_bytes: int
    target: float
    measurements: list[tuple[int, int | None]] = field(default_factory=list)  # (size, peak or None=OOM)

    @property
    def peak_fraction(self) -> float:
        return self.peak_bytes / self.total_bytes if self.total_bytes else 0.0

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "peak_bytes": self.peak_bytes, "total_bytes": self.total_bytes,
                "target": self.target, "measurements": self.measurements}


def is_oom(error: BaseException) -> bool:
    """Out-of-memory in any of its forms (CUDA's own class, or the RuntimeError texts Accelerate knows)."""
    name = type(error).__name__
    return name == "OutOfMemoryError" or (isinstance(error, Exception) and should_reduce_batch_size(error))


def find_max_batch(measure: Measure, total_bytes: int, target: float = 0.9, start: int = 1,
                   limit: int = 16384) -> ProbeResult:
    budget = target * total_bytes
    result = ProbeResult(0, 0, total_bytes, target)

    def fits(size: int) -> bool:
        try:
            peak = measure(size)
        except Exception as e:  # noqa: BLE001 - only OOM is "too big"; anything else is a real error
            if not is_oom(e):
                raise
            result.measurements.append((size, None))
            return False
        result.measurements.append((size, peak))
        if peak <= budget:
            if size > result.batch_size:
                result.batch_size, result.peak_bytes = size, peak
            return True
        return False

    good, bad = 0, None
    size = min(max(1, start), limit)
    while bad is None:
        if fits(size):
            if size == limit:  # everything up to the limit fits
                return result
            good, size = size, min(size * 2, limit)
        else:
            bad = size
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return result


def plan_batch(requested: int, max_per_device: int | None) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) for a requested effective batch size.

    Above the probed maximum, run the largest power of two that fits and accumulate gradients
    to make up the requested effective batch.
    """
    if not max_per_device or requested <= max_per_device:
        return requested, 1
    per_device = 2 ** int(math.floor(math.log2(max_per_device)))
    return per_device, math.ceil(requested / per_device)


def cuda_measure(build: Callable[[], tuple], vocab_size: int, max_length: int, precision: str,
                 device: int = 0, task=None) -> Measure:
    """A `Measure` on a CUDA device. `build()` returns a fresh (model, optimizer) on that device;
    `task` gives the labels and loss (default: single-label cross-entropy)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def measure(batch_size: int) -> int:
        model = optimizer = batch = None
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            model, optimizer = build()
            ids = torch.randint(1000 % vocab_size, vocab_size, (batch_size, max_length), device=f"cuda:{device}")
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                logits = model(**batch)
            if task is None:
                labels = torch.zeros(batch_size, dtype=torch.long, device=ids.device)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            else:
                labels = task.dummy_labels(batch_size, max_length, logits.shape[-1], ids.device)
                loss = task.loss(logits.float(), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            return int(torch.cuda.max_memory_reserved(device))
        finally:
            del model, optimizer, batch
            gc.collect()
            torch.cuda.empty_cache()

    return measure


def probe_config(model_path: str, params, num_labels: int, precision: str, target: float = 0.9,
                 device: int = 0, task=None, attention: str = "auto") -> ProbeResult:
    """Probe one trial configuration (task, model, head, strategy, max length, precision) on a GPU."""
    import copy
    import dataclasses

    import torch

    from orchestrator.models.heads import attention_kernel, load_encoder
    from orchestrator.tasks import get_task

    task = task or get_task("single_label")
    if params.head is None:
        params = dataclasses.replace(params, head=task.heads[0])
    encoder = load_encoder(model_path, pooler=params.head == "pooler", attention=attention_kernel(attention, cuda=True))
    template = task.build_model(encoder, num_labels, params)
    template.apply_strategy(params.strategy, params.freeze_layers)

    def build():
        model = copy.deepcopy(template).to(f"cuda:{device}").train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        return model, torch.optim.AdamW(trainable, lr=1e-5)

    total = torch.cuda.get_device_properties(device).total_memory
    measure = cuda_measure(build, template.encoder.config.vocab_size, params.max_length, precision, device, task)
    return find_max_batch(measure, total, target)
