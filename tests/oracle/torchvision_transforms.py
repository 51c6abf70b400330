"""Oracle for the parity tests: runs torchvision's transforms on image files.

Usage: /usr/bin/python3 torchvision_transforms.py JOBS.json
JOBS.json is a list of {"image": PATH, "out": PATH, "resize": N | [H, W],
"center_crop": N | null, "mean": [...], "std": [...]}; each output is the
normalized CHW float32 tensor, little-endian, raw.
"""
import json
import sys

import numpy as np
import torchvision.transforms as T
from PIL import Image


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        steps = [T.Resize(job["resize"])]
        if job.get("center_crop"):
            steps.append(T.CenterCrop(job["center_crop"]))
        steps += [T.ToTensor(), T.Normalize(job["mean"], job["std"])]
        image = Image.open(job["image"]).convert("RGB")
        T.Compose(steps)(image).numpy().astype("<f4").tofile(job["out"])


if __name__ == "__main__":
    main()
