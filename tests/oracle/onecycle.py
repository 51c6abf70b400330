"""Oracle: PyTorch's OneCycleLR learning rates and momenta, one line of JSON.

/usr/bin/python3 onecycle.py MAX_LR TOTAL_STEPS PCT_START ANNEAL DIV FINAL_DIV
"""
import json
import sys

import torch

max_lr, total, pct, anneal, div, final_div = (float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4],
                                              float(sys.argv[5]), float(sys.argv[6]))
param = torch.nn.Parameter(torch.zeros(1))
optimizer = torch.optim.SGD([param], lr=max_lr, momentum=0.9)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=pct,
                                               anneal_strategy=anneal, div_factor=div, final_div_factor=final_div)
lrs, momenta = [], []
for _ in range(total):
    lrs.append(optimizer.param_groups[0]["lr"])
    momenta.append(optimizer.param_groups[0]["momentum"])
    optimizer.step()
    schedule.step()
print(json.dumps({"lr": lrs, "momentum": momenta}))
