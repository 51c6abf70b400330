"""Oracle for the random_erasing example plugin: for each case, the
rectangle size torchvision's RandomErasing.get_params picks for fixed scale
and ratio, and the top-left corners where torchvision's F.erase of the input
with that rectangle and value gives exactly flowrun's output.

    /usr/bin/python3 torchvision_erasing.py cases.json  -> prints JSON results
"""
import json
import sys

import numpy as np
import torch
import torchvision.transforms.functional as F
from torchvision.transforms import RandomErasing

results = []
for case in json.load(open(sys.argv[1])):
    c, h, w = case["shape"]
    x = torch.from_numpy(np.fromfile(case["input"], dtype=np.float32).reshape(c, h, w))
    ours = torch.from_numpy(np.fromfile(case["output"], dtype=np.float32).reshape(c, h, w))
    i, j, eh, ew, v = RandomErasing.get_params(x, scale=tuple(case["scale"]), ratio=tuple(case["ratio"]),
                                               value=case["value"])
    erased = not (eh == h and ew == w)  # torchvision's "no rectangle fits": the image itself
    matches = []
    if erased:
        for top in range(h - eh + 1):
            for left in range(w - ew + 1):
                if torch.equal(F.erase(x, top, left, eh, ew, v), ours):
                    matches.append([top, left])
    results.append({"h": eh, "w": ew, "erased": erased, "matches": matches, "unchanged": torch.equal(x, ours)})
print(json.dumps(results))
