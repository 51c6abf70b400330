"""Head-only epochs with and without precomputed backbone features.

One command, both in one run on the same machine:
    /usr/bin/python3 bench/precompute_bench.py [--threads 2]
runs graphs/linear_probe.graph's training flow alone (its evaluation flow
left out, so that only head-training epochs are timed) with
train.precompute=on and =off, each for 2 and for 12 epochs, and reports the
wall time of one head-only epoch, (T(12) - T(2)) / 10 -- the first epochs
(features computed, pipeline warming up) cancel out -- and the ratio; also
the train stage's own step throughput (train_images_per_s_best, best epoch) and
that the final training loss is the same.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def graph_without_evaluation():
    lines = open(os.path.join(ROOT, "graphs", "linear_probe.graph")).read().splitlines()
    keep = [l for l in lines if not l.startswith(("val_", "evaluate", "flow val_src"))]
    # The graph's relative paths are from graphs/: write the variant there.
    path = os.path.join(ROOT, "graphs", ".precompute_bench.graph")
    with open(path, "w") as f:
        f.write("\n".join(keep) + "\n")
    return path


def run(binary, graph, mode, epochs, threads):
    with tempfile.NamedTemporaryFile(suffix=".json") as summary:
        start = time.monotonic()
        subprocess.run([binary, graph, "--threads", str(threads), "--set", "run.epochs=%d" % epochs, "--set",
                        "train.precompute=" + mode, "--summary-json", summary.name],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.monotonic() - start
        return elapsed, json.load(open(summary.name))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "flowrun"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    graph = graph_without_evaluation()
    try:
        # Makes the source model first, if it is not cached yet.
        run(args.binary, graph, "off", 1, args.threads)
        results = {}
        for mode in ("off", "on"):
            short, _ = run(args.binary, graph, mode, 2, args.threads)
            long, summary = run(args.binary, graph, mode, 12, args.threads)
            results[mode] = ((long - short) / 10, summary)
    finally:
        os.remove(graph)
    print("head-only epoch (800 images, ResNet-50 backbone frozen, %d threads):" % args.threads)
    for mode in ("off", "on"):
        epoch_s, summary = results[mode]
        print("  precompute=%-3s  %.3f s/epoch   train step throughput %.0f img/s   final train loss %.6f" %
              (mode, epoch_s, summary["train_images_per_s_best"], summary["train_loss"]))
    print("  speed-up: %.1fx per epoch, %.1fx in the train stage's steps" %
          (results["off"][0] / results["on"][0],
           results["on"][1]["train_images_per_s_best"] / results["off"][1]["train_images_per_s_best"]))


if __name__ == "__main__":
    sys.exit(main())
