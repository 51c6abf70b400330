"""Oracle: the indices PyTorch's DistributedSampler (shuffle=False,
drop_last=False) gives each rank of a dataset of N samples, in order.

    /usr/bin/python3 distributed_sampler.py N:WORLD...
        -> prints JSON, one entry a case: [[rank 0's], [rank 1's], ...]
"""
import json
import sys

from torch.utils.data.distributed import DistributedSampler

cases = []
for case in sys.argv[1:]:
    n, world = (int(part) for part in case.split(":"))
    dataset = range(n)  # the sampler only needs len()
    cases.append([list(DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False))
                  for rank in range(world)])
print(json.dumps(cases))
