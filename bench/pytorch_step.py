#!/usr/bin/env python3
"""PyTorch (CPU) yardstick for examples/ops_bench.rs.

Times one training step (forward + backward + AdamW) at batch 128 on
1x28x28 inputs for the same three models, and inference images/s in eval
mode under no_grad. Inputs are random with the Fashion-MNIST shape: the step
time does not depend on the values.

Usage:
    python bench/pytorch_step.py [--threads 2] [--steps 20] [--rounds 3] [--json]

Prints one line per model; with --json, one JSON object per line:
{"lib": "pytorch", "model": ..., "train_ms": ..., "train_cpu_ms": ..., "infer_img_s": ...}
train_ms is the median over rounds x steps single-step wall-clock timings,
train_cpu_ms the median CPU time (all threads) of a step.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (x if self.proj is None else self.proj(x)))


class ResNet8(nn.Module):
    """Stem conv 16 + three basic blocks (16, 32/2, 64/2) + global pool + fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


MODELS = {"mlp": Mlp, "cnn": Cnn, "resnet8": ResNet8}


def bench(name, steps, rounds, batch, infer_batch):
    torch.manual_seed(0)
    model = MODELS[name]()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(3):
        step()
    times, cpu = [], []
    for _ in range(rounds):
        for _ in range(steps):
            c = time.process_time()
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    model.eval()
    infer = []
    x = torch.randn(infer_batch, 1, 28, 28)
    with torch.no_grad():
        model(x)
        for _ in range(rounds):
            for _ in range(steps):
                t = time.perf_counter()
                model(x)
                infer.append(time.perf_counter() - t)
    med = statistics.median
    return 1e3 * med(times), 1e3 * med(cpu), infer_batch / med(infer)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--infer-batch", type=int, default=None, help="inference batch (default: --batch)")
    ap.add_argument("--models", default="mlp,cnn,resnet8")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for name in a.models.split(","):
        infer_batch = a.infer_batch or a.batch
        train_ms, cpu_ms, img_s = bench(name, a.steps, a.rounds, a.batch, infer_batch)
        if a.json:
            print(json.dumps({"lib": "pytorch", "model": name, "train_ms": train_ms,
                              "train_cpu_ms": cpu_ms, "infer_batch": infer_batch, "infer_img_s": img_s}))
        else:
            print(f"pytorch {name:<8} train {train_ms:8.2f} ms/step, cpu {cpu_ms:8.2f} ms  "
                  f"inference {img_s:10.0f} img/s")


if __name__ == "__main__":
    main()
