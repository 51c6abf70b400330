"""The cost of a domain-adaptation step against a plain one.

    /usr/bin/python3 bench/adaptation_bench.py [--epochs 2] [--threads 2]

runs graphs/domain_adaptation.graph (its three training flows: source-only,
CORAL, DANN, on the same batches of 64 source + 64 target images) and
reports, per train stage, the steps' own throughput in source images per
second (train_images_per_s: the images over the time stepping, the pipeline
filling up not counted) and the forward / backward / optimizer seconds it
summed, with the ratio to the source-only step. A plain step forwards the
64 source images; CORAL's and DANN's forward both domains (128), so about
2x is the floor.
"""
import argparse
import json
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "flowrun"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "summary.json")
        subprocess.run([args.binary, os.path.join(ROOT, "graphs", "domain_adaptation.graph"), "--threads",
                        str(args.threads), "--set", "run.epochs=%d" % args.epochs, "--run-dir", tmp,
                        "--summary-json", summary], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stages = {s["name"]: s.get("figures", {}) for s in json.load(open(summary))["stages"]}
    plain = stages["train"]
    print("%-12s %10s %8s %9s %9s %9s" % ("stage", "src img/s", "ratio", "forward", "backward", "optimizer"))
    for name in ("train", "coral_train", "dann_train"):
        f = stages[name]
        print("%-12s %10.1f %7.2fx %8.1fs %8.1fs %8.1fs" % (
            name, f["train_images_per_s"], plain["train_images_per_s"] / f["train_images_per_s"], f["forward_s"],
            f["backward_s"], f["optimizer_s"]))


if __name__ == "__main__":
    main()
