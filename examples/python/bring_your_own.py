"""Bring your own cascade: three PyTorch models of rising cost on
Fashion-MNIST, their outputs written as traces with
``cascade_env.write_trace``, and every stopping agent fitted and compared
on them with ``cascade_env.agents``.

    python examples/python/bring_your_own.py --out docs/results/bring-your-own

Needs torch (CPU is enough) and, for the figure, matplotlib; the data are
Debian's ``dataset-fashion-mnist`` files (``/usr/share/datasets/fashion-mnist``,
or ``--data``), read with numpy: nothing is downloaded.

Splits (each with one role): the classifiers train on the first 50,000
training images; the agents train on the next 5,000 (outputs the
classifiers never fitted) and make every choice (thresholds, early
stopping) on the last 5,000; the 10,000 test images are the report.

The models, each run on its own (the cumulative cost model: an input
forwarded to stage 3 has paid for stages 1 and 2 too):

1. ``linear``: logistic regression on the pixels; features: the 7x7
   average-pooled image (16 values);
2. ``mlp``: 784-256-10; features: the 256 hidden units;
3. ``cnn``: two 3x3 conv layers (32, 64 channels, each followed by 2x2 max
   pooling) and a linear head; features: the 64 channels, average-pooled.

Costs are their multiply-accumulates per image (MACs). Writes, under
``--out``: the three traces, ``results.md`` (the table), ``results.csv``
and ``pareto.png`` / ``pareto.svg`` (test error against mean cost).

:func:`compare` (traces in, table out) is what ``python/tests/test_byo.py``
runs on numpy-made outputs, so the path after the models is tested without
torch.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import time
from pathlib import Path
from typing import Any

import numpy as np

import cascade_env
from cascade_env import agents

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
AGENTS = ["threshold", "threshold-per-stage", "threshold-entropy", "backward-induction", "ann", "reinforce-frozen"]
ALPHAS = [0.003, 0.01, 0.03, 0.1, 0.3]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def one(stem: str) -> np.ndarray:
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return read_idx(folder / name)
        raise FileNotFoundError(f"{folder}/{stem}(.gz) not found (Debian: apt-get install dataset-fashion-mnist)")

    x_train = one("train-images-idx3-ubyte").astype(np.float32) / 255.0
    x_test = one("t10k-images-idx3-ubyte").astype(np.float32) / 255.0
    return x_train, one("train-labels-idx1-ubyte").astype(np.int64), x_test, one("t10k-labels-idx1-ubyte").astype(np.int64)


def train_models(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> tuple[list[Any], list[float]]:
    """The three models, trained with Adam; returns them and their MACs."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            feats = nn.functional.avg_pool2d(x, 7).flatten(1)  # [N, 16]
            return self.fc(x.flatten(1)), feats

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Linear(784, 256)
            self.out = nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.hidden(x.flatten(1)))
            return self.out(h), h

    class Cnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(1, 32, 3, padding=1)
            self.c2 = nn.Conv2d(32, 64, 3, padding=1)
            self.fc = nn.Linear(64 * 7 * 7, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
            h = nn.functional.max_pool2d(torch.relu(self.c2(h)), 2)
            return self.fc(h.flatten(1)), h.mean(dim=(2, 3))

    macs = [
        784.0 * 10,
        784.0 * 256 + 256 * 10,
        28 * 28 * 32 * 9.0 + 14 * 14 * 64 * 32 * 9 + 64 * 7 * 7 * 10,
    ]
    xt, yt = torch.from_numpy(x[:, None]), torch.from_numpy(y)
    models = [Linear(), Mlp(), Cnn()]
    for model, name in zip(models, ["linear", "mlp", "cnn"]):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for epoch in range(epochs):
            start = time.time()
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), 128):
                idx = perm[i : i + 128]
                loss = nn.functional.cross_entropy(model(xt[idx])[0], yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            print(f"{name} epoch {epoch + 1}: loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
        model.eval()
    return models, macs


def outputs(models: list[Any], x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per model, the features ``[N, d_t]`` and logits ``[N, C]`` on ``x``."""
    import torch

    feats, logits = [], []
    with torch.no_grad():
        xt = torch.from_numpy(x[:, None])
        for m in models:
            parts = [m(xt[i : i + 1000]) for i in range(0, len(xt), 1000)]
            logits.append(torch.cat([p[0] for p in parts]).numpy())
            feats.append(torch.cat([p[1] for p in parts]).numpy())
    return feats, logits


def compare(
    traces: dict[str, Path],
    out: Path,
    *,
    agent_names: list[str] = AGENTS,
    alphas: list[float] = ALPHAS,
    reinforce: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Fits every agent at every alpha on ``traces["train"]`` (choices on
    ``traces["val"]``), evaluates it once on ``traces["test"]`` and writes
    ``results.csv``, ``results.md`` and (with matplotlib) the Pareto figure
    into ``out``. Returns the table's rows."""
    out.mkdir(parents=True, exist_ok=True)
    k = cascade_env.load_trace(traces["test"]).header["stages"]
    rows: list[dict[str, Any]] = []

    def row(agent: agents.Agent, alpha: float | None) -> dict[str, Any]:
        ev = agents.evaluate(agent, traces["test"])
        return {
            "agent": agent.name,
            "alpha": alpha,
            "test_error_pct": 100 * ev.error,
            "cost_pct": 100 * ev.mean_cost,
            **{f"stop_s{t + 1}": share for t, share in enumerate(ev.stop_share)},
        }

    for t in range(len(k)):
        rows.append(row(agents.fit(f"static-{t + 1}", traces["train"], traces["val"]), None))
    rows.append(row(agents.fit("oracle", traces["train"], traces["val"]), None))
    for name in agent_names:
        for alpha in alphas:
            settings = reinforce if name == "reinforce-frozen" else None
            a = agents.fit(name, traces["train"], traces["val"], alpha=alpha, seed=0, reinforce=settings)
            rows.append(row(a, alpha))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    stops = [c for c in rows[0] if c.startswith("stop_s")]
    lines = [
        "| agent | alpha | test error % | mean cost % of the largest model | " + " | ".join(f"stops at {c[6:]}" for c in stops) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(stops),
    ]
    for r in rows:
        alpha = "" if r["alpha"] is None else f"{r['alpha']:g}"
        shares = " | ".join(f"{100 * r[c]:.1f}%" for c in stops)
        lines.append(f"| {r['agent']} | {alpha} | {r['test_error_pct']:.2f} | {r['cost_pct']:.1f} | {shares} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return rows
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in agent_names:
        pts = sorted((r["cost_pct"], r["test_error_pct"]) for r in rows if r["agent"] == name)
        ax.plot(*zip(*pts), marker="o", label=name)
    static = [r for r in rows if r["agent"].startswith("static-")]
    ax.scatter([r["cost_pct"] for r in static], [r["test_error_pct"] for r in static], marker="s", color="black", label="static models", zorder=3)
    for r in static:
        ax.annotate(r["agent"], (r["cost_pct"], r["test_error_pct"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("mean cost, % of the largest model's MACs (cumulative)")
    ax.set_ylabel("test error, %")
    ax.set_title("Fashion-MNIST, linear / MLP / CNN cascade: stopping agents")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"pareto.{ext}", dpi=120, metadata={"Date": None} if ext == "svg" else None)
    plt.close(fig)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--out", type=Path, default=Path("runs/bring-your-own"))
    p.add_argument("--epochs", type=int, default=2, help="training epochs of each model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    x_train, y_train, x_test, y_test = load_fashion_mnist(args.data)
    models, macs = train_models(x_train[:50000], y_train[:50000], args.epochs, args.seed)
    splits = {
        "train": (x_train[50000:55000], y_train[50000:55000]),
        "val": (x_train[55000:], y_train[55000:]),
        "test": (x_test, y_test),
    }
    traces = {}
    for split, (x, y) in splits.items():
        feats, logits = outputs(models, x)
        traces[split] = args.out / f"{split}.safetensors"
        cascade_env.write_trace(
            traces[split],
            features=feats,
            logits=logits,
            labels=y,
            costs=macs,
            cost_unit="MACs",
            dataset="fashion-mnist",
            split=split,
            cascade="linear-mlp-cnn",
            class_names=CLASSES,
            stage_names=["linear", "mlp", "cnn"],
        )
    compare(traces, args.out)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
