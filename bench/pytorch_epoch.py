#!/usr/bin/env python3
"""PyTorch (CPU) twin of `cascade bench --epoch`: one real training epoch.

Trains a fresh model (bench/pytorch_reference.py's rebuild of the
cascade-rl zoo: same layers, same option-A ResNet shortcuts) for one epoch
of Fashion-MNIST (or MNIST) in the same form as the project's training loop
(`cascade_rl::train::train_model`):

* the training split: the 60000 training images less a 10% validation
  split (a seeded permutation), normalised with the training split's mean
  and standard deviation, held in memory as one float32 tensor;
* per step: a batch of the shuffled indices, the recipe's augmentation
  (random crops from the image zero-padded by `crop_padding` pixels and
  random horizontal flips, per image, done as batched tensor indexing in
  this process: no DataLoader workers on a 2-core machine), the learning
  rate of the schedule (cosine with linear warm-up, per step), forward,
  cross-entropy, backward, the optimiser step (AdamW, or SGD with Nesterov
  momentum and L2 weight decay, as `torch.optim` defines them), and the
  loss and error read back to Python as the project does every step; a
  last batch of one image is dropped, as there;
* after the pass, the validation split in eval mode (batch
  `eval_batch_size`) and a copy of the weights (the project keeps the best
  epoch's);
* then, timed alone as `infer_s`, one more pass over the validation split
  in eval mode under no_grad (the inference throughput on real data, every
  shape already seen once), as `cascade bench --epoch` does.

The recipe is a JSON object in the project's `TrainConfig` form (what
`cascade bench --epoch --json` prints under `recipe`); without --recipe the
fmnist-4 preset's recipe of the model is used (src/presets.rs).

Usage:
    python bench/pytorch_epoch.py --model resnet-20 [--threads 2] [--json]
        [--recipe JSON] [--data-dir /usr/share/datasets/fashion-mnist] [--max-train N]

Prints one line, or with --json one JSON object:
{"lib": "pytorch", "model": ..., "train_s": ..., "epoch_s": ..., ...}
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import build, find, read_idx  # noqa: E402


def adamw(lr, wd):
    return {"kind": "adamw", "lr": lr, "weight_decay": wd, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def plain(lr, wd):
    return {"epochs": 1, "batch_size": 128, "optimizer": adamw(lr, wd), "schedule": {"kind": "cosine"},
            "warmup_epochs": 0.0, "augment": {"hflip": False, "crop_padding": 0}, "eval_batch_size": 500}


# The fmnist-4 preset's recipes (src/presets.rs), for runs without --recipe.
SGD_LAST = {
    "epochs": 1, "batch_size": 128,
    "optimizer": {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
    "schedule": {"kind": "cosine"}, "warmup_epochs": 1.0,
    "augment": {"hflip": True, "crop_padding": 2}, "eval_batch_size": 500,
}
PRESET = {
    "linear": plain(1e-3, 0.0),
    "mlp-256": plain(1e-3, 1e-4),
    "cnn-8-16-fc64": plain(2e-3, 1e-4),
    "resnet-20": SGD_LAST,
}


def load(data_dir, val_fraction, seed):
    """(train_x, train_y, val_x, val_y): normalised float32 [n, 1, 28, 28] and int64 [n]."""
    images = read_idx(find(data_dir, "train-images-idx3-ubyte")).astype(np.float32) / 255.0
    labels = read_idx(find(data_dir, "train-labels-idx1-ubyte")).astype(np.int64)
    n = len(labels)
    n_val = round(n * val_fraction)
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:n_val], order[n_val:]
    mean, std = images[train].mean(), images[train].std()
    x = torch.from_numpy((images - mean) / max(std, 1e-12)).unsqueeze(1)
    y = torch.from_numpy(labels)
    return x[train].contiguous(), y[train].contiguous(), x[val].contiguous(), y[val].contiguous()


def augment(x, pad, hflip, gen):
    """Per-image random crop from the zero-padded image and random flip, batched."""
    b, c, h, w = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [b, 1, h, 1]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [b, 1, 1, w]
        bi = torch.arange(b)[:, None, None, None]
        ci = torch.arange(c)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    if hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def lr_at(recipe, step, total, per_epoch):
    """The project's TrainConfig::lr_at."""
    base = recipe["optimizer"]["lr"]
    frac = step / max(total, 1)
    kind = recipe["schedule"]["kind"]
    if kind == "constant":
        lr = base
    elif kind == "cosine":
        lr = base * 0.5 * (1.0 + math.cos(math.pi * frac))
    else:
        at, gamma = recipe["schedule"]["at"], recipe["schedule"]["gamma"]
        lr = base * gamma ** sum(frac >= m for m in at)
    warm = recipe["warmup_epochs"] * per_epoch
    if warm > 0 and step < warm:
        lr *= (step + 1.0) / warm
    return lr


def optimizer(model, cfg):
    if cfg["kind"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                                 eps=cfg["eps"], weight_decay=cfg["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                           weight_decay=cfg["weight_decay"], nesterov=cfg["nesterov"])


def evaluate(model, x, y, batch):
    model.eval()
    wrong, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            out = model(x[i : i + batch])
            loss += F.cross_entropy(out, y[i : i + batch], reduction="sum").item()
            wrong += (out.argmax(1) != y[i : i + batch]).sum().item()
    model.train()
    return wrong / len(y), loss / len(y)


def epoch(model, recipe, data, seed):
    """One epoch as train_model runs it; returns the timings and losses."""
    train_x, train_y, val_x, val_y = data
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer(model, recipe["optimizer"])
    n, b = len(train_y), recipe["batch_size"]
    per_epoch = n // b + int(n % b > 1)
    aug = recipe["augment"]
    t0 = time.perf_counter()
    model.train()
    order = torch.randperm(n, generator=gen)
    loss_sum, wrong, seen = 0.0, 0, 0
    for step in range(per_epoch):
        idx = order[step * b : (step + 1) * b]
        x, y = train_x[idx], train_y[idx]
        if aug["hflip"] or aug["crop_padding"] > 0:
            x = augment(x, aug["crop_padding"], aug["hflip"], gen)
        lr = lr_at(recipe, step, per_epoch * recipe["epochs"], per_epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(idx)
        wrong += (out.argmax(1) != y).sum().item()
        seen += len(idx)
    train_s = time.perf_counter() - t0
    val_error, _ = evaluate(model, val_x, val_y, recipe["eval_batch_size"])
    best = copy.deepcopy(model.state_dict())
    epoch_s = time.perf_counter() - t0
    del best
    t1 = time.perf_counter()
    evaluate(model, val_x, val_y, recipe["eval_batch_size"])
    infer_s = time.perf_counter() - t1
    return {"steps": per_epoch, "train_s": train_s, "epoch_s": epoch_s, "train_img_per_s": seen / train_s,
            "train_loss": loss_sum / seen, "val_error": val_error, "infer_s": infer_s,
            "infer_img_per_s": len(val_y) / infer_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a cascade-rl model name (resnet-20, mlp-256, ...)")
    ap.add_argument("--recipe", help="TrainConfig JSON (default: the fmnist-4 preset's for the model)")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--max-train", type=int, default=None, help="use at most this many training images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    recipe = json.loads(a.recipe) if a.recipe else copy.deepcopy(PRESET.get(a.model, SGD_LAST))
    recipe["epochs"] = 1
    t0 = time.perf_counter()
    data = load(a.data_dir, a.val_fraction, a.seed)
    if a.max_train is not None:
        data = (data[0][: a.max_train], data[1][: a.max_train], data[2], data[3])
    load_s = time.perf_counter() - t0
    model = build(a.model, (1, 28, 28), 10)
    r = epoch(model, recipe, data, a.seed)
    row = {"lib": "pytorch", "torch": torch.__version__, "threads": a.threads, "model": a.model,
           "train_images": len(data[1]), "val_images": len(data[3]), "load_s": load_s, "recipe": recipe, **r}
    if a.json:
        print(json.dumps(row))
    else:
        print(f"pytorch {torch.__version__} {a.model}: {r['steps']} steps, train {r['train_s']:.2f} s "
              f"({r['train_img_per_s']:.0f} img/s), epoch with validation {r['epoch_s']:.2f} s, "
              f"train loss {r['train_loss']:.4f}, val error {100 * r['val_error']:.2f}%")


if __name__ == "__main__":
    main()
