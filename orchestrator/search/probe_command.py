"""`python -m orchestrator probe`: the largest per-device batch of the experiment's training
defaults on GPU 0 (the probe itself is `orchestrator.training.probe`).

It lives with the search because the experiment's encoder may be a registered one
(`models:/NAME@ALIAS`), which only the registry, above training, can fetch.
"""

from __future__ import annotations

import torch

from orchestrator.config import ExperimentConfig
from orchestrator.registry.encoders import resolve_encoder
from orchestrator.tasks import get_task
from orchestrator.training.loop import precision_for
from orchestrator.training.probe import probe_config


def probe_experiment(cfg: ExperimentConfig) -> list[str]:
    """Probe the experiment's training defaults on GPU 0; the lines to print."""
    if not torch.cuda.is_available():
        return ["no GPU visible: on CPU there is no probe, configured batch sizes are used as given"]
    t = cfg.training
    precision = precision_for(cpu=False)
    result = probe_config(resolve_encoder(cfg.model, cfg.tracking.uri).path, t, 2, precision, cfg.search.memory_target,
                          task=get_task(cfg.task, cfg), attention=cfg.model.attention)
    name = torch.cuda.get_device_name(0)
    sizes = ", ".join(f"{b}:{'OOM' if p is None else f'{p / 2**30:.1f}G'}" for b, p in result.measurements)
    return [f"{name}: head={t.head} strategy={t.strategy} max_length={t.max_length} precision={precision}",
            f"largest per-device batch {result.batch_size}, peak reserved {result.peak_bytes / 2**30:.2f} GiB "
            f"of {result.total_bytes / 2**30:.2f} GiB ({result.peak_fraction:.1%}; target {result.target:.0%})",
            f"measured: {sizes}"]
