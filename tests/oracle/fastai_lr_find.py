"""Oracle: fastai's learning-rate suggestions (fastai/callback/schedule.py,
`valley` and `steep`, as Learner.lr_find calls them) on a curve flowrun
recorded.

    /usr/bin/python3 fastai_lr_find.py LR_FIND_CSV NUM_IT  -> prints JSON {"valley": lr, "steep": lr}

LR_FIND_CSV is flowrun's RUN_DIR/lr_find.csv (step,lr,loss,smoothed_loss);
NUM_IT the sweep's planned number of steps. As Learner.lr_find does,
the suggestions look at the smoothed losses without the first NUM_IT // 10
points and the last 5. Debian has no fastai: `valley` and `steep` are
transcribed from fastai 2.7's source, in float64 (fastai's float32 tensors
change nothing but ties).
"""
import csv
import json
import math
import sys


def valley(lrs, losses):
    "fastai's valley: the longest valley, 2/3 of the way down it (its loop, unchanged)"
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return lrs[idx]


def steep(lrs, losses):
    "fastai's steep: where the loss falls fastest against log(lr)"
    grads = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(losses) - 1)]
    return lrs[min(range(len(grads)), key=grads.__getitem__)]


rows = list(csv.DictReader(open(sys.argv[1])))
num_it = int(sys.argv[2])
lrs = [float(row["lr"]) for row in rows][num_it // 10:-5]
losses = [float(row["smoothed_loss"]) for row in rows][num_it // 10:-5]
if len(losses) < 2:
    sys.exit("fastai_lr_find.py: %d points left of %d: fastai has no suggestion" % (len(losses), len(rows)))
print(json.dumps({"valley": valley(lrs, losses), "steep": steep(lrs, losses), "points": len(losses)}))
