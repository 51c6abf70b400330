"""The data-path benchmark: flowrun against torchvision's DataLoader.

One command does it all:
    /usr/bin/python3 bench/data_bench.py [--threads 1 2] [--epochs 3] [--images-per-class 100]
(a) generates a 1/f-noise JPEG ImageFolder at imagewoof2-160 sizes (cached in
    build/bench-data/), (b) runs build/flowrun bench/data.graph on it, (c) runs
    torchvision's DataLoader with the same transforms on the same files with as
    many worker processes as flowrun has threads, in this same run, and prints
    images/s of both, per core and in total, and the ratio, each row with the
    vector instructions each side's kernels run on (flowrun's Highway target,
    ATen's CPU capability; bench/cpu_info.py). It also runs flowrun for 1 and
    5 epochs and compares peak resident memory.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import cpu_info

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_flowrun(binary, data, threads, epochs, extra=()):
    with tempfile.NamedTemporaryFile(suffix=".json") as summary:
        subprocess.run([binary, os.path.join(HERE, "data.graph"), "--set", "source.root=" + data, "--set",
                        "run.epochs=%d" % epochs, "--threads", str(threads), "--summary-json", summary.name,
                        *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(summary.name) as f:
            return json.load(f)


def run_torchvision(data, workers, epochs):
    import torch
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    torch.set_num_threads(1)
    transform = T.Compose([
        T.RandomCrop(160, padding=4, padding_mode="reflect"),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ])
    loader = DataLoader(ImageFolder(data, transform), batch_size=64, shuffle=True, num_workers=workers,
                        persistent_workers=True, worker_init_fn=lambda _: torch.set_num_threads(1))
    images = 0
    start = None
    for _ in range(epochs):
        for batch, _labels in loader:
            if start is None:  # from the first batch on, as flowrun counts from its first sample
                start = time.perf_counter()
            else:
                images += batch.shape[0]
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the median is shown")
    parser.add_argument("--images-per-class", type=int, default=100)
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "flowrun"))
    parser.add_argument("--data", default=os.path.join(ROOT, "build", "bench-data"))
    args = parser.parse_args()

    subprocess.run([sys.executable, os.path.join(HERE, "make_imagefolder.py"), args.data, "--per-class",
                    str(args.images_per_class)], check=True)
    files = [os.path.join(d, f) for d, _, names in os.walk(args.data) for f in names if f.endswith(".JPEG")]
    count = len(files)
    mean_kb = sum(os.path.getsize(f) for f in files) / max(1, count) / 1024
    print("data: %s, %d JPEGs, %.1f KB each on average; %d epochs per measurement, median of %d; %d cores" % (
        args.data, count, mean_kb, args.epochs, args.repeats, os.cpu_count()))
    print(cpu_info.header(args.binary))
    simd = "%s / %s" % (cpu_info.flowrun_cpu(args.binary)["kernels"], cpu_info.torch_cpu())
    print("%-8s %-26s %12s %10s %12s %10s %8s  %s" % ("threads", "flowrun", "img/s", "per core", "torchvision",
                                                       "per core", "ratio", "simd (flowrun / torchvision)"))
    variants = [("accurate decode", ()), ("decode.fast=true", ("--set", "decode.fast=true"))]
    def median(values):
        return sorted(values)[len(values) // 2]

    for threads in args.threads:
        theirs = median([run_torchvision(args.data, threads, args.epochs) for _ in range(args.repeats)])
        for name, extra in variants:
            runs = [run_flowrun(args.binary, args.data, threads, args.epochs, extra) for _ in range(args.repeats)]
            ours = sorted(runs, key=lambda r: r["images_per_s"])[len(runs) // 2]
            print("%-8d %-26s %12.0f %10.0f %12.0f %10.0f %7.2fx  %s" % (
                threads, name, ours["images_per_s"], ours["images_per_s"] / threads, theirs, theirs / threads,
                ours["images_per_s"] / theirs, simd), flush=True)
            if ours["skipped"]:
                print("  flowrun skipped %d files" % ours["skipped"])
        busy = {k: v["busy_s"] for k, v in ours["stages"].items()}
        images = ours["images"]
        print("         where flowrun's time goes (decode.fast=true; us of stage time per image): " +
              ", ".join("%s %.0f" % (k, 1e6 * v / images) for k, v in busy.items() if v / images > 1e-6))
    one = run_flowrun(args.binary, args.data, args.threads[-1], 1)["peak_rss_mb"]
    five = run_flowrun(args.binary, args.data, args.threads[-1], 5)["peak_rss_mb"]
    print("flowrun peak resident memory: %.0f MB after 1 epoch, %.0f MB after 5 epochs" % (one, five))


if __name__ == "__main__":
    main()
