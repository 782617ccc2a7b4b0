"""The learning task: generated data, a tiny torch model, local training and evaluation.

Each client generates its own examples from its partition id (no download, any number of
clients): points in 20 dimensions labelled by one fixed random hyperplane, with 10% of
labels flipped. Partition -1 is the server's test set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

FEATURES = 20
SEED = 7
NOISE = 0.1


def data_path(value: object, data_dir: object) -> Path:
    """A path from the run config: absolute as given (`~` expanded), else under `data-dir`."""
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else Path(os.path.expanduser(str(data_dir))) / path


def dataset(partition: int, examples: int) -> tuple[np.ndarray, np.ndarray]:
    """`examples` points of client `partition` (the test set: partition -1)."""
    plane = np.random.default_rng(SEED).standard_normal(FEATURES)
    rng = np.random.default_rng([SEED, partition + 1])
    x = rng.standard_normal((examples, FEATURES)).astype(np.float32)
    y = (x @ plane > 0).astype(np.int64)
    flip = rng.random(examples) < NOISE
    return x, np.where(flip, 1 - y, y)


def model() -> torch.nn.Module:
    """The model, initialised alike everywhere (clients then load the global weights).
    Seeding the CPU generator alone: `torch.manual_seed` also records a CUDA seeding call
    with its stack, milliseconds that a 1,000-client round pays 2,000 times."""
    torch.default_generator.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 2))


def train(net: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> float:
    """Full-batch SGD for `steps` steps; the last loss."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
    return float(loss.detach())


def evaluate(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy)."""
    with torch.no_grad():
        out = net(torch.from_numpy(x))
        loss = float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y)))
        return loss, float((out.argmax(1).numpy() == y).mean())
