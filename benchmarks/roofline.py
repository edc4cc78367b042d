#!/usr/bin/python3
"""The distance to the hardware: a training step's and an inference batch's floating-point
operations, counted layer by layer, against the peak of the cores that ran them.

Counts the U-Net of benchmarks/reference_unet.py (the paper's, or fedda's default with
--upsample nearest_conv: the same network fedda-bench times) with forward hooks on one batch:

  convolution            2 * N * C_out * H_out * W_out * C_in * k_h * k_w (+ N * C_out * H_out * W_out bias)
  transposed convolution 2 * N * C_in * H_in * W_in * C_out * k_h * k_w
  training step          3 x the forward convolutions (forward, gradient of the input, gradient of
                         the weights) less the first layer's input gradient, which nobody needs;
                         batch norm, ReLU, up-sampling, the loss and Adam are counted apart as
                         element operations (memory-bound; a few per element)

Peak of `--threads` cores: cores x GHz x FLOP per cycle per core, from /proc/cpuinfo's vendor and
flags unless given (--ghz, --fp32-per-cycle, --bf16-per-cycle):

  fp32   AVX-512 on Intel (two 512-bit FMA units): 64; AVX2 + FMA (Intel, AMD Zen 2-4): 32
  bf16   AMX-BF16: 1024; AVX512-BF16 on Intel: 128, on AMD Zen 4: 64; none: the fp32 peak

GHz: the nominal clock (`model name` "@ x GHz", else the TSC's, `cpu MHz`); boost and a
hypervisor's share make that peak uncertain by tens of percent. So the peak that counts is
measured: fedda-peak (benchmarks/peak_flops.cpp, built beside fedda-bench) runs register-only
fused multiply-adds on `--threads` threads per instruction set the processor has, and the
percentages below are of what it reached (the nominal peak is printed beside it).

  benchmarks/roofline.py --rate "c++ training, fedda default=19.2" --rate "python training, reference=16.8"

Prints the counts, the peaks and one row per --rate (slices/s -> GFLOP/s, % of peak).
See docs/performance.md for the figures.
"""
import argparse
import os
import re
import subprocess
import sys

import torch
import torch.nn as nn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from reference_unet import UNet  # noqa: E402  (the same folder)


def count(model, batch, channels, size):
    """Forward FLOPs of the convolutions, of the first convolution, and element operations."""
    conv, first, elements = [0], [None], [0]

    def on_conv(m, inputs, out):
        n, cout, h, w = out.shape
        flops = 2 * n * cout * h * w * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        if m.bias is not None:
            flops += n * cout * h * w
        conv[0] += flops
        if first[0] is None:
            first[0] = flops

    def on_transposed(m, inputs, out):
        n, cin, h, w = inputs[0].shape
        conv[0] += 2 * n * cin * h * w * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def on_elements(m, inputs, out):
        elements[0] += out.numel()

    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            m.register_forward_hook(on_transposed)
        elif isinstance(m, nn.Conv2d):
            m.register_forward_hook(on_conv)
        elif isinstance(m, (nn.BatchNorm2d, nn.ReLU, nn.Upsample)):
            m.register_forward_hook(on_elements)
    with torch.no_grad():
        model(torch.zeros(batch, channels, size, size))
    return conv[0], first[0] or 0, elements[0]


def cpu_facts():
    text = open("/proc/cpuinfo").read()
    flags = set(re.search(r"^flags\s*:\s*(.*)$", text, re.M).group(1).split())
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M).group(1)
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M).group(1).strip()
    ghz = None
    nominal = re.search(r"@\s*([\d.]+)\s*GHz", model)
    if nominal:
        ghz = float(nominal.group(1))
    else:
        mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
        ghz = float(mhz.group(1)) / 1000 if mhz else None
    return vendor, model, flags, ghz


def per_cycle(vendor, flags):
    intel = vendor == "GenuineIntel"
    if "avx512f" in flags and intel:
        fp32 = 64
    elif "avx2" in flags and "fma" in flags:
        fp32 = 32
    else:
        fp32 = 16
    if "amx_bf16" in flags:
        bf16 = 1024
    elif "avx512_bf16" in flags:
        bf16 = 128 if intel else 64
    else:
        bf16 = None
    return fp32, bf16


def measured_peaks(binary, threads):
    """{"fp32": GFLOP/s, "bf16": GFLOP/s} as fedda-peak measured them ({} without it)."""
    if not binary or not os.access(binary, os.X_OK):
        return {}
    out = subprocess.run([binary, "--threads", str(threads), "--seconds", "2"], check=True,
                         capture_output=True, text=True).stdout
    peaks = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("fp32", "bf16"):
            peaks[parts[0]] = max(peaks.get(parts[0], 0.0), float(parts[2]))
    return peaks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--upsample", choices=["transposed", "nearest_conv"], default="nearest_conv")
    ap.add_argument("--threads", type=int, default=2, help="cores the measurements used")
    ap.add_argument("--ghz", type=float, help="clock per core (default: the nominal one, see above)")
    ap.add_argument("--fp32-per-cycle", type=int, help="fp32 FLOP per cycle per core (default: from the flags)")
    ap.add_argument("--bf16-per-cycle", type=int, help="bf16 FLOP per cycle per core (default: from the flags)")
    ap.add_argument("--peak-bin", default=os.path.join(os.environ.get("FEDDA_BIN_DIR", "build/bin"), "fedda-peak"),
                    help="fedda-peak, which measures the peak (default: build/bin/fedda-peak; none: nominal only)")
    ap.add_argument("--rate", action="append", default=[],
                    help="NAME=SLICES_PER_S: a measurement to place (names with 'inference' count the forward only)")
    args = ap.parse_args()

    model = UNet(2, 2, args.width, args.depth, args.upsample)
    forward, first, elements = count(model, args.batch, 2, args.size)
    training = 3 * forward - first
    print(f"U-Net width {args.width}, depth {args.depth}, {args.upsample} up-sampling, batch {args.batch} of "
          f"2x{args.size}x{args.size}: {sum(p.numel() for p in model.parameters())} parameters")
    print(f"  forward: {forward / 1e9:.3f} GFLOP in convolutions ({forward / args.batch / 1e6:.1f} MFLOP per slice), "
          f"{elements / 1e6:.1f} M element outputs of batch norm, ReLU and up-sampling")
    print(f"  training step: {training / 1e9:.3f} GFLOP in convolutions (3 x forward - the first layer's "
          f"input gradient, {first / 1e9:.3f})")

    vendor, name, flags, ghz = cpu_facts()
    fp32, bf16 = per_cycle(vendor, flags)
    fp32 = args.fp32_per_cycle or fp32
    bf16 = args.bf16_per_cycle or bf16
    ghz = args.ghz or ghz
    if not ghz:
        sys.exit("roofline.py: no clock in /proc/cpuinfo; pass --ghz")
    peak32 = args.threads * ghz * fp32
    peak16 = args.threads * ghz * bf16 if bf16 else None
    units = sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"})
    print(f"cpu: {name} ({vendor}), {' '.join(units)}; {args.threads} cores x {ghz:.2f} GHz")
    print(f"  peak fp32: {args.threads} x {ghz:.2f} x {fp32} = {peak32:.1f} GFLOP/s; peak bf16: " +
          (f"{args.threads} x {ghz:.2f} x {bf16} = {peak16:.1f} GFLOP/s" if peak16 else "no bfloat16 units"))
    measured = measured_peaks(args.peak_bin, args.threads)
    if measured:
        print(f"  measured by fedda-peak on {args.threads} threads: fp32 {measured['fp32']:.1f} GFLOP/s" +
              (f", bf16 {measured['bf16']:.1f} GFLOP/s" if "bf16" in measured else ""))
    else:
        print("  no fedda-peak (make build): percentages of the nominal peak")
    ceiling32 = measured.get("fp32", peak32)
    ceiling16 = measured.get("bf16", peak16)
    which = "measured" if measured else "nominal"
    if args.rate:
        print(f"{'measurement':<48} {'slices/s':>9} {'GFLOP/s':>8} {'% fp32 ' + which:>16} {'% bf16 ' + which:>16}")
    for item in args.rate:
        label, _, value = item.rpartition("=")
        if not label:
            sys.exit(f"roofline.py: --rate {item!r} is not NAME=SLICES_PER_S")
        flops = forward if "inference" in label else training
        gflops = float(value) / args.batch * flops / 1e9
        row = f"{label:<48} {float(value):>9.1f} {gflops:>8.1f} {100 * gflops / ceiling32:>15.1f}%"
        row += f" {100 * gflops / ceiling16:>15.1f}%" if ceiling16 else f" {'-':>16}"
        print(row)


if __name__ == "__main__":
    main()
