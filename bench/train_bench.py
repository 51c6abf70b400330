"""The training benchmark: flowrun's fine-tune loop against PyTorch's own.

One command, both sides in one run on the same files and cores:
    /usr/bin/python3 bench/train_bench.py [--depths 18 50] [--epochs 3] [--images-per-class 64] [--threads 2]
    .venv-torch2/bin/python bench/train_bench.py --build build-torch2   # LibTorch 2.x against PyTorch 2.x
(the PyTorch side is the torch of the interpreter that runs this script;
flowrun's is the LibTorch its build was made with: both are printed)
(a) generates a JPEG ImageFolder (bench/make_imagefolder.py, cached in
    build/bench-data-train/), (b) runs build/flowrun bench/train.graph on it,
(c) runs the same job as a PyTorch script: torchvision's ResNet, an
    ImageFolder DataLoader with worker processes (as many as flowrun has
    threads, minus one, at least one) and the same transforms,
    torch.set_num_threads(threads), Adam + clip_grad_value_ + OneCycleLR
    stepped per batch, batch 32, drop_last. Prints the best epoch's training
    images/s of each (from the first batch of the epoch to its last step;
    the best of --repeats alternating runs), the ratio, and flowrun's CPU use,
    each row with the precision each side trained in and the vector
    instructions its kernels run on (bench/cpu_info.py).
--pairs FLOWRUN:PYTORCH... chooses the precisions compared: flowrun's
precision= (auto, fp32, bf16) against PyTorch's loop in fp32 or in CPU bf16
autocast (torch.autocast("cpu", torch.bfloat16) around forward and loss).
The default, auto:fp32 bf16:bf16, is the issue-25 pair: flowrun's default
against PyTorch's default, and bf16 against bf16 on the same work.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import cpu_info

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_flowrun(binary, data, depth, epochs, threads, precision):
    with tempfile.NamedTemporaryFile(suffix=".json") as summary:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([binary, os.path.join(HERE, "train.graph"), "--set", "source.root=" + data, "--set",
                        "model.depth=%d" % depth, "--set", "run.epochs=%d" % epochs, "--set", "model.precision=" + precision,
                        "--threads", str(threads),
                        "--summary-json", summary.name], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(summary.name) as f:
            result = json.load(f)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result["cpu_percent"] = 100 * cpu / wall
        return result


def run_pytorch(data, depth, epochs, threads, precision):
    import torch
    import torchvision
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    transform = T.Compose([
        T.RandomResizedCrop(96),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    workers = max(1, threads - 1)
    loader = DataLoader(ImageFolder(data, transform), batch_size=32, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=True,
                        worker_init_fn=lambda _: torch.set_num_threads(1))
    model = getattr(torchvision.models, "resnet%d" % depth)(num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=epochs * len(loader))
    best = 0.0
    model.train()
    for _ in range(epochs):
        images, start = 0, None
        for batch, labels in loader:
            if start is None:
                start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(batch), labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_value_(model.parameters(), 0.1)
            optimizer.step()
            schedule.step()
            images += batch.shape[0]
        best = max(best, images / (time.perf_counter() - start))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 50])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--images-per-class", type=int, default=64)
    parser.add_argument("--pairs", nargs="+", default=["auto:fp32", "bf16:bf16"],
                        help="FLOWRUN:PYTORCH precisions compared (flowrun: auto, fp32, bf16; PyTorch: fp32, bf16)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating; the best is shown")
    parser.add_argument("--build", default=os.path.join(ROOT, "build"), help="flowrun's build folder")
    parser.add_argument("--binary", help="the flowrun binary (default: BUILD/flowrun)")
    parser.add_argument("--data", default=os.path.join(ROOT, "build", "bench-data-train"))
    args = parser.parse_args()
    args.binary = args.binary or os.path.join(args.build, "flowrun")
    import torch
    version = subprocess.run([args.binary, "--version"], capture_output=True, text=True, check=True).stdout
    print("flowrun: %s (%s); PyTorch: %s" % (args.binary, version.splitlines()[1].split(",")[0], torch.__version__))

    subprocess.run([sys.executable, os.path.join(HERE, "make_imagefolder.py"), args.data, "--per-class",
                    str(args.images_per_class)], check=True)
    count = sum(1 for _, _, names in os.walk(args.data) for name in names if name.endswith(".JPEG"))
    print("data: %s, %d JPEGs; %d epochs at 96 px, batch 32; %d threads on a %d-core machine" % (
        args.data, count, args.epochs, args.threads, os.cpu_count()))
    pairs = [pair.split(":") for pair in args.pairs]
    for ours_p, theirs_p in pairs:
        if ours_p not in ("auto", "fp32", "bf16") or theirs_p not in ("fp32", "bf16"):
            raise SystemExit("--pairs: FLOWRUN:PYTORCH with FLOWRUN auto, fp32 or bf16 and PYTORCH fp32 or bf16, "
                             "not %s:%s" % (ours_p, theirs_p))
    ours_cpu = cpu_info.flowrun_cpu(args.binary)
    print(cpu_info.header(args.binary))
    aten = cpu_info.torch_cpu()

    def simd(precision):
        # bf16 matrix work runs on the CPU's bf16 dot products where it has
        # them (oneDNN), else emulated; fp32 on ATen's widest kernels.
        if precision != "bf16":
            return aten
        native = [x for x in ours_cpu["extensions"].split() if x in ("avx512_bf16", "amx_bf16")]
        return "+".join(native) if native else "bf16 emulated"
    print("%-10s %-10s %14s %-10s %14s %8s %14s  %s" % ("model", "flowrun", "flowrun img/s", "PyTorch",
                                                        "PyTorch img/s", "ratio", "flowrun CPU %",
                                                        "simd (flowrun / PyTorch)"))
    for depth in args.depths:
        for ours_p, theirs_p in pairs:
            resolved = ours_cpu["auto"] if ours_p == "auto" else ours_p
            theirs, ours = 0.0, None
            for _ in range(args.repeats):  # alternating, so that a slow spell of a shared machine hits both
                theirs = max(theirs, run_pytorch(args.data, depth, args.epochs, args.threads, theirs_p))
                run = run_flowrun(args.binary, args.data, depth, args.epochs, args.threads, ours_p)
                if ours is None or run["train_images_per_s_best"] > ours["train_images_per_s_best"]:
                    ours = run
            print("%-10s %-10s %14.1f %-10s %14.1f %7.2fx %14.0f  %s" % (
                "resnet%d" % depth, ours_p + ("=" + resolved if ours_p == "auto" else ""),
                ours["train_images_per_s_best"], theirs_p, theirs, ours["train_images_per_s_best"] / theirs,
                ours["cpu_percent"], "%s / %s" % (simd(resolved), simd(theirs_p))), flush=True)


if __name__ == "__main__":
    main()
