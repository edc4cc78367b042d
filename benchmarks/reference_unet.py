#!/usr/bin/python3
"""The reference a PyTorch user would write, timed like fedda-bench times fedda.

The paper's standard U-Net (depth 4, width 16, batch norm, ReLU, 2x2 stride-2 transposed
convolutions), eager Python on Debian's python3-torch (LibTorch 1.13 underneath), Adam,
cross-entropy + soft Dice, float32, NCHW. Options switch on fedda's levers one at a time so the
cost or gain of the language alone can be read against fedda-bench on the same configuration:

  --upsample nearest_conv   fedda's default up-sampling (nearest + 1x1 convolution)
  --channels-last           NHWC memory format for the model and the batch
  --bf16                    bfloat16 autocast on the CPU (forward; backward follows)
  --slices FILE             real preprocessed slices of a simulated clinic, as fedda-bench
                            --slices-out wrote them (training batches from the slices with
                            brain, inference over every slice, in fedda-bench's order)

Prints one line per measurement: "<name> <slices/s>". Sets no thresholds.
See docs/performance.md for the commands and the figures.
"""
import argparse
import contextlib
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBlock(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, in_channels=2, classes=2, width=16, depth=4, upsample="transposed"):
        super().__init__()
        self.depth = depth
        self.down, self.up, self.decode = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        channels = in_channels
        for level in range(depth + 1):
            self.down.append(ConvBlock(channels, width << level))
            channels = width << level
        for level in reversed(range(depth)):
            out = width << level
            if upsample == "transposed":
                self.up.append(nn.ConvTranspose2d(channels, out, 2, stride=2))
            else:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, out, 1)))
            self.decode.append(ConvBlock(2 * out, out))
            channels = out
        self.head = nn.Conv2d(channels, classes, 1)

    def forward(self, x):
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for k, (up, block) in enumerate(zip(self.up, self.decode)):
            x = block(torch.cat([skips[-1 - k], up(x)], 1))
        return self.head(x)


def supervised_loss(logits, labels):
    loss = F.cross_entropy(logits, labels, ignore_index=-1)
    p = torch.softmax(logits, 1)[:, 1]
    truth = (labels == 1).to(p.dtype)
    dice = 1 - (2 * (p * truth).sum() + 1) / (p.sum() + truth.sum() + 1)
    return loss + dice


def real_batches(path, batch):
    """fedda-bench --slices-out's slices as fedda-bench batches them: up to 64 training batches
    from the slices with brain and up to 64 inference batches of every slice, in order."""
    import numpy as np  # only for real slices

    with open(path + ".json") as f:
        meta = json.load(f)
    n, size = meta["slices"], meta["size"]
    if not meta["brain_slices"]:
        raise SystemExit(f"{path}: no slice with brain to train on")
    raw = np.fromfile(path, dtype="<f4")
    if raw.size != n * 4 * size * size:
        raise SystemExit(f"{path}: {raw.size} values, {n} slices of 2+1+1 x {size}x{size} expected")
    images = torch.from_numpy(raw[: n * 2 * size * size].reshape(n, 2, size, size).copy())
    labels = torch.from_numpy(raw[n * 2 * size * size: n * 3 * size * size].reshape(n, size, size).copy()).long()

    def take(pool):
        count = min(64, max(1, len(pool) // batch))
        return [torch.tensor([pool[(b * batch + j) % len(pool)] for j in range(batch)]) for b in range(count)]

    train = take(meta["brain_slices"])
    infer = take(list(range(n)))
    print(f"python inputs: {n} real slices of {size}x{size}, {len(meta['brain_slices'])} with brain, "
          f"{len(train)} training and {len(infer)} inference batches", file=sys.stderr)
    return [images[i] for i in train], [labels[i] for i in train], [images[i] for i in infer]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--upsample", choices=["transposed", "nearest_conv"], default="transposed")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--slices", help="real slices written by fedda-bench --slices-out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    name = f"{args.upsample}{' channels-last' if args.channels_last else ''}{' bf16' if args.bf16 else ''}"

    net = UNet(upsample=args.upsample).to(memory_format=fmt)
    adam = torch.optim.Adam(net.parameters(), lr=1e-3)
    if args.slices:
        train_images, train_labels, infer_images = real_batches(args.slices, args.batch)
        train_images = [b.to(memory_format=fmt) for b in train_images]
        infer_images = [b.to(memory_format=fmt) for b in infer_images]
    else:
        images = torch.randn(args.batch, 2, args.size, args.size).to(memory_format=fmt)
        train_images, train_labels, infer_images = [images], [(torch.rand(args.batch, args.size, args.size) < 0.02).long()], [images]
    net.train()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            start = time.perf_counter()
        k = i % len(train_images)
        adam.zero_grad(set_to_none=True)
        with cast():
            logits = net(train_images[k])
        supervised_loss(logits.float(), train_labels[k]).backward()
        adam.step()
    print(f"python training {name} {args.batch * args.steps / (time.perf_counter() - start):.1f}", flush=True)

    net.eval()
    with torch.inference_mode(), cast():
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                start = time.perf_counter()
            torch.softmax(net(infer_images[i % len(infer_images)]).float(), 1)
    print(f"python inference {name} {args.batch * args.steps / (time.perf_counter() - start):.1f}", flush=True)


if __name__ == "__main__":
    main()
