"""Fixtures for the pre-training tests: a small Chinese review corpus (synthetic, written here)
and an experiment that pre-trains a tiny encoder from scratch on it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

GOOD = ["服务很好", "房间干净", "早餐丰富", "位置方便", "性价比高", "环境安静"]
BAD = ["服务太差", "房间很脏", "早餐难吃", "位置偏僻", "价格太贵", "隔音不好"]
FILLER = ["这家酒店", "我们", "总的来说", "下次还会", "前台", "老板"]


def chinese_reviews(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        words = rng.sample(GOOD if label == "positive" else BAD, 2) + rng.sample(FILLER, 2)
        rng.shuffle(words)
        rows.append({"text": "，".join(words) + "。", "label": label})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def zh_data(tmp_path) -> Path:
    d = tmp_path / "zh"
    write_rows(d / "train.csv", chinese_reviews(240, 1))
    write_rows(d / "validation.csv", chinese_reviews(40, 2))
    write_rows(d / "test.csv", chinese_reviews(40, 3))
    return d


TINY = {"init": "scratch", "vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
        "intermediate_size": 64, "max_positions": 64, "max_length": 32, "batch_size": 16, "learning_rate": 2e-3,
        "max_steps": 40, "eval_every": 10, "save_every": 10, "log_every": 5, "eval_share": 0.1}


def zh_experiment(folder: Path, data: Path, name: str = "zh", pretrain: dict | None = None, **sections) -> Path:
    """An experiment whose encoder is its own pre-trained one (models:/<name>-clf-encoder@pretrained)."""
    cfg = {
        "name": name,
        "data": {"train": str(data / "train.csv"), "validation": str(data / "validation.csv"),
                 "test": str(data / "test.csv")},
        "model": {"name_or_path": f"models:/{name}-clf-encoder@pretrained"},
        "pretrain": {**TINY, **(pretrain or {})},
        "training": {"epochs": 2, "learning_rate": 2e-3, "batch_size": 16, "max_length": 32},
        "search": {"n_trials": 1, "pruner": "none"},
        "registry": {"model_name": f"{name}-clf"},
    }
    for key, values in sections.items():
        cfg[key] = {**cfg.get(key, {}), **values}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path
