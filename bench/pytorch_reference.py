#!/usr/bin/env python3
"""PyTorch (CPU) reference for `cascade bench`, and a checkpoint cross-check.

The models are the cascade-rl classifier zoo rebuilt in PyTorch with the
same structure and parameter names (linear, mlp-H..., cnn-C...[-fcH|-gap]
[-nobn], resnet-N[-wX][-b] with option-A zero-padding shortcuts by default).

bench: times one training step (forward, cross-entropy, backward, AdamW
update, batch norm in training mode) and one inference batch (eval mode,
no_grad) per model at batch 128 on random inputs, median of --iters timings
after one warm-up, like `cascade bench`:

    python bench/pytorch_reference.py bench --threads 2 --iters 5 \
        --models linear mlp-256 cnn-8-16-fc64 resnet-8 --input 1,28,28

check: loads a cascade folder written by `cascade pretrain` (cascade.json +
stage{t}.safetensors, read here with the standard library and numpy only),
builds each stage in PyTorch, loads its weights with
load_state_dict(strict=False) (only PyTorch's num_batches_tracked counters
are missing) and evaluates the test split of an IDX data set (MNIST format),
normalised as recorded; prints its test error next to the recorded one:

    python bench/pytorch_reference.py check --cascade runs/fmnist-4 \
        --data-dir /usr/share/datasets/fashion-mnist
"""
import argparse
import gzip
import json
import os
import statistics
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Models (names and structure as in src/models/)
# ---------------------------------------------------------------------------


class LinearNet(nn.Module):
    def __init__(self, shape, classes, pool=1):
        super().__init__()
        c, h, w = shape
        self.pool = pool
        self.fc = nn.Linear(c * (h // pool) * (w // pool), classes)

    def forward(self, x):
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return self.fc(x.flatten(1))


class Mlp(nn.Module):
    def __init__(self, shape, classes, hidden):
        super().__init__()
        d = shape[0] * shape[1] * shape[2]
        for i, h in enumerate(hidden):
            setattr(self, f"fc{i + 1}", nn.Linear(d, h))
            d = h
        self.n = len(hidden)
        self.fc = nn.Linear(d, classes)

    def forward(self, x):
        x = x.flatten(1)
        for i in range(self.n):
            x = F.relu(getattr(self, f"fc{i + 1}")(x))
        return self.fc(x)


class Cnn(nn.Module):
    def __init__(self, shape, classes, channels, hidden=128, batch_norm=True):
        super().__init__()
        c, h, w = shape
        self.n, self.bn, self.hidden = len(channels), batch_norm, hidden
        for i, co in enumerate(channels):
            setattr(self, f"conv{i + 1}", nn.Conv2d(c, co, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                setattr(self, f"bn{i + 1}", nn.BatchNorm2d(co))
            c, h, w = co, h // 2, w // 2
        if hidden is not None:
            self.fc1 = nn.Linear(c * h * w, hidden)
            self.fc = nn.Linear(hidden, classes)
        else:
            self.fc = nn.Linear(c, classes)

    def forward(self, x):
        for i in range(self.n):
            x = getattr(self, f"conv{i + 1}")(x)
            if self.bn:
                x = getattr(self, f"bn{i + 1}")(x)
            x = F.max_pool2d(F.relu(x), 2)
        if self.hidden is not None:
            x = F.relu(self.fc1(x.flatten(1)))
        else:
            x = x.mean((2, 3))
        return self.fc(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.kind = None
        if stride != 1 or cin != cout:
            if shortcut == "A":
                extra = cout - cin
                self.kind, self.pad, self.stride = "A", (extra // 2, extra - extra // 2), stride
            else:
                self.kind = "B"
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.kind == "A":
            s = x[:, :, ::2, ::2] if self.stride == 2 else x
            s = F.pad(s, (0, 0, 0, 0, self.pad[0], self.pad[1]))
        elif self.kind == "B":
            s = self.downsample(x)
        else:
            s = x
        return F.relu(y + s)


class ResNet(nn.Module):
    def __init__(self, shape, classes, depth, width=1.0, shortcut="A"):
        super().__init__()
        n = (depth - 2) // 6
        ch = [max(1, round(c * width)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(shape[0], ch[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch[0])
        cin = ch[0]
        for s, cout in enumerate(ch):
            blocks = []
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride, shortcut))
                cin = cout
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(ch[2], classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


def build(name, shape, classes):
    """A model from a cascade-rl model name."""
    family, *rest = name.split("-")
    if family == "linear":
        pool = int(rest[0][4:]) if rest else 1
        return LinearNet(shape, classes, pool)
    if family == "mlp":
        return Mlp(shape, classes, [int(r) for r in rest])
    if family == "cnn":
        channels, hidden, bn = [], 128, True
        for r in rest:
            if r == "gap":
                hidden = None
            elif r == "nobn":
                bn = False
            elif r.startswith("fc"):
                hidden = int(r[2:])
            else:
                channels.append(int(r))
        return Cnn(shape, classes, channels, hidden, bn)
    if family == "resnet":
        depth, width, shortcut = int(rest[0]), 1.0, "A"
        for r in rest[1:]:
            if r == "b":
                shortcut = "B"
            elif r.startswith("w"):
                width = float(r[1:])
        return ResNet(shape, classes, depth, width, shortcut)
    raise ValueError(f"unknown model {name}")


# ---------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------


def bench(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = tuple(int(v) for v in args.input.split(","))
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, args.classes, (args.batch,))
    rows = []
    for name in args.models:
        m = build(name, shape, args.classes)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)
        m.train()
        train = []
        for i in range(args.iters + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()
            if i > 0:
                train.append((time.perf_counter() - t0) * 1e3)
        m.eval()
        infer = []
        with torch.no_grad():
            for i in range(args.iters + 1):
                t0 = time.perf_counter()
                m(x).sum().item()
                if i > 0:
                    infer.append((time.perf_counter() - t0) * 1e3)
        tr, inf = statistics.median(train), statistics.median(infer)
        rows.append(
            {
                "lib": "pytorch",
                "model": name,
                "batch": args.batch,
                "train_ms": tr,
                "train_img_per_s": args.batch / tr * 1e3,
                "infer_ms": inf,
                "infer_img_per_s": args.batch / inf * 1e3,
            }
        )
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": args.threads, "stages": rows}, indent=2))
        return
    print(
        f"pytorch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
        f"median of {args.iters} (training step = forward + backward + AdamW)"
    )
    print(f"{'model':<14} {'train ms/step':>14} {'train img/s':>12} {'infer ms/batch':>14} {'infer img/s':>12}")
    for r in rows:
        print(
            f"{r['model']:<14} {r['train_ms']:>14.2f} {r['train_img_per_s']:>12.0f} "
            f"{r['infer_ms']:>14.2f} {r['infer_img_per_s']:>12.0f}"
        )


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------


def read_safetensors(path):
    """name -> torch tensor, with the standard library and numpy only."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def find(data_dir, stem):
    for suffix in ("", ".gz"):
        p = os.path.join(data_dir, stem + suffix)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(os.path.join(data_dir, stem))


def check(args):
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.cascade, "cascade.json")) as f:
        manifest = json.load(f)
    images = read_idx(find(args.data_dir, "t10k-images-idx3-ubyte")).astype(np.float32) / 255.0
    labels = read_idx(find(args.data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64)
    n_test = manifest["split"]["n_test"]
    mean = manifest["normalization"]["mean"][0]
    std = manifest["normalization"]["std"][0]
    x = torch.from_numpy((images[:n_test] - mean) / std).unsqueeze(1)
    y = torch.from_numpy(labels[:n_test])
    shape, classes = manifest["input_shape"], manifest["num_classes"]
    print(f"cascade {manifest['preset']} on {manifest['dataset']}, {n_test} test images")
    for st in manifest["stages"]:
        m = build(st["name"], shape, classes)
        missing, unexpected = m.load_state_dict(read_safetensors(os.path.join(args.cascade, st["file"])), strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        assert not missing and not unexpected, (missing, unexpected)
        m.eval()
        with torch.no_grad():
            pred = torch.cat([m(x[i : i + 1000]).argmax(1) for i in range(0, n_test, 1000)])
        err = (pred != y).float().mean().item()
        print(
            f"stage {st['stage']} {st['name']:<14} pytorch test error {100 * err:.2f}%  "
            f"recorded (candle) {100 * st['test_error']:.2f}%"
        )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--models", nargs="+", default=["linear", "mlp-256", "cnn-8-16-fc64", "resnet-8"])
    b.add_argument("--input", default="1,28,28")
    b.add_argument("--classes", type=int, default=10)
    b.add_argument("--batch", type=int, default=128)
    b.add_argument("--iters", type=int, default=5)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--json", action="store_true")
    c = sub.add_parser("check")
    c.add_argument("--cascade", required=True)
    c.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    c.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    bench(args) if args.cmd == "bench" else check(args)


if __name__ == "__main__":
    main()
