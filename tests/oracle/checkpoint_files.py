"""Oracle for weight files as the PyTorch ecosystem writes them.

/usr/bin/python3 checkpoint_files.py SOURCE.pth OUT_DIR
reads a torchvision ResNet-18 state dict (the model oracle's 18.pth) and
writes it again, with torch.save, in the shapes other tools give it:
  dataparallel.pth  nn.DataParallel(model).state_dict(): every key 'module.'
  lightning.ckpt    Lightning's {'state_dict': {'model.*'}, 'epoch', 'global_step',
                    'optimizer_states': [SGD state with momentum], 'lr_schedulers',
                    'hyper_parameters': {... an argparse.Namespace, a set, bytes,
                    a big int, and an object whose unpickling would run os.system}}
  imagenet.pth.tar  the ImageNet example's {'epoch', 'arch', 'state_dict',
                    'best_acc1' (a tensor), 'optimizer'}
  timm_ema.pth      timm's {'state_dict': zeros, 'state_dict_ema': the weights}
  compiled.pth      torch.compile'd: every key '_orig_mod.'
  old_bn.pth        no BatchNorm num_batches_tracked (PyTorch < 0.4.1, converters)
  backbone.pth      every key 'backbone.' (a part of a larger model)
  no_weights.pth    {'epoch': 3, 'arch': 'resnet18'}
  mixed.pth         25 BatchNorm keys missing and one unexpected key
"""
import argparse
import collections
import os
import sys

import torch
import torchvision


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(sys.argv[2], "PWNED"),))


def main():
    source, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    state = torch.load(source)
    model = torchvision.models.resnet18(num_classes=7)
    model.load_state_dict(state)

    def prefixed(prefix, sd=state):
        return collections.OrderedDict((prefix + k, v) for k, v in sd.items())

    torch.save(torch.nn.DataParallel(model).state_dict(), os.path.join(out, "dataparallel.pth"))

    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    sgd.step()
    model.load_state_dict(state)  # the step moved the weights: the saved ones are the oracle's
    torch.save({
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.9.0",
        "state_dict": prefixed("model."),
        "optimizer_states": [sgd.state_dict()],
        "lr_schedulers": [{"last_epoch": 3, "_last_lr": [0.01]}],
        "hyper_parameters": {"lr": 0.1, "layers": [1, 2, 3], "name": "resnet18",
                             "args": argparse.Namespace(batch=32, amp=True), "tags": {"a", "b"},
                             "blob": b"\x00\x01", "big": 2 ** 80, "hook": Evil(), "none": None},
    }, os.path.join(out, "lightning.ckpt"))

    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": prefixed("module."),
                "best_acc1": torch.tensor(71.5), "optimizer": sgd.state_dict()},
               os.path.join(out, "imagenet.pth.tar"))

    zeros = collections.OrderedDict((k, torch.zeros_like(v)) for k, v in state.items())
    torch.save({"state_dict": zeros, "state_dict_ema": state, "epoch": 10}, os.path.join(out, "timm_ema.pth"))

    torch.save(prefixed("_orig_mod."), os.path.join(out, "compiled.pth"))

    old = collections.OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    torch.save(old, os.path.join(out, "old_bn.pth"))

    torch.save(prefixed("backbone."), os.path.join(out, "backbone.pth"))
    torch.save({"epoch": 3, "arch": "resnet18"}, os.path.join(out, "no_weights.pth"))

    mixed = collections.OrderedDict(state)
    for k in [k for k in mixed if k.endswith("running_var")][:20]:
        del mixed[k]
    for k in [k for k in mixed if k.endswith("running_mean")][:5]:
        del mixed[k]
    mixed["head.extra"] = torch.zeros(2)
    torch.save(mixed, os.path.join(out, "mixed.pth"))
    open(os.path.join(out, "complete"), "w").close()


if __name__ == "__main__":
    main()
