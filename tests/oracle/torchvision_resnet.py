"""Oracle for the model tests: torchvision ResNets and weight files.

/usr/bin/python3 torchvision_resnet.py --make OUT_DIR
writes, for ResNet-18 and ResNet-50 with random weights (random BatchNorm
statistics too) and 7 classes: DEPTH.pth (torch.save of the state dict, as
torchvision publishes), DEPTH.safetensors, DEPTH.keys (one key per line),
DEPTH.input.f32 ([2,3,32,32]) and DEPTH.logits.f32 (eval mode); plus hostile
files: evil.pth (a pickle that would run os.system), and weight files with a
missing, an unexpected and a mis-shaped key.

/usr/bin/python3 torchvision_resnet.py --check DEPTH FILE.safetensors INPUT.f32 OUT.f32
loads a safetensors file (written by flowrun) into torchvision's ResNet with
load_state_dict(strict=True) and writes its eval logits.

/usr/bin/python3 torchvision_resnet.py --features DEPTH WEIGHTS.safetensors FEATURES.csv SIZE BATCH OUT.f32
the features torchvision gives for the images of a features CSV (flowrun's
`features` stage), in its row order: Resize(SIZE), CenterCrop(SIZE),
ToTensor, Normalize(ImageNet), then nn.Sequential(*list(model.children())[:-1])
on batches of BATCH rows, as flowrun batched them (the batch size alone moves
float32 features of a random ResNet-50 by ~2e-4: other kernels, other sums).

/usr/bin/python3 torchvision_resnet.py --adabn DEPTH WEIGHTS.safetensors INPUT.f32 BATCHES BATCH OUT.safetensors
AdaBN as PyTorch users write it: every BatchNorm2d's running statistics
reset, momentum=None (a cumulative average), the model in eval mode but its
BatchNorm layers in train mode, a no-grad forward of each of the BATCHES
batches of [BATCH, 3, 32, 32] images; writes the model's state dict.
"""
import csv
import collections
import json
import os
import struct
import sys

import numpy as np
import torch
import torchvision

DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.float64: "F64"}
TORCH = {v: k for k, v in DTYPES.items()}


def save_safetensors(state, path):
    header, blobs, offset = {}, [], 0
    for name, t in state.items():
        data = t.detach().contiguous().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = collections.OrderedDict()
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        dtype = TORCH[e["dtype"]]
        arr = np.frombuffer(data[b:end], dtype=torch.empty(0, dtype=dtype).numpy().dtype).copy()
        out[name] = torch.from_numpy(arr).reshape(e["shape"])
    return out


def make_model(depth, classes):
    return getattr(torchvision.models, "resnet%d" % depth)(num_classes=classes)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(sys.argv[2], "PWNED"),))


def features(depth, weights, table, size, batch, out):
    from PIL import Image
    from torchvision import transforms as T
    state = load_safetensors(weights)
    model = make_model(depth, state["fc.weight"].shape[0])
    model.load_state_dict(state, strict=True)
    model.eval()
    backbone = torch.nn.Sequential(*list(model.children())[:-1])
    prep = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with open(table) as f:
        paths = [row["path"] for row in csv.DictReader(f)]
    x = torch.stack([prep(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        rows = [backbone(x[i:i + batch]).flatten(1) for i in range(0, len(x), batch)]
    torch.cat(rows).numpy().astype("<f4").tofile(out)


def adabn(depth, weights, inp, batches, batch, out):
    state = load_safetensors(weights)
    model = make_model(depth, state["fc.weight"].shape[0])
    model.load_state_dict(state, strict=True)
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    x = torch.from_numpy(np.fromfile(inp, dtype="<f4")).reshape(batches * batch, 3, 32, 32)
    with torch.no_grad():
        for i in range(batches):
            model(x[i * batch:(i + 1) * batch])
    save_safetensors(model.state_dict(), out)


def main():
    if sys.argv[1] == "--adabn":
        adabn(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
        return
    if sys.argv[1] == "--features":
        features(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
        return
    if sys.argv[1] == "--check":
        depth, weights, inp, out = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        state = load_safetensors(weights)
        model = make_model(depth, state["fc.weight"].shape[0])
        model.load_state_dict(state, strict=True)
        model.eval()
        x = torch.from_numpy(np.fromfile(inp, dtype="<f4")).reshape(2, 3, 32, 32)
        with torch.no_grad():
            model(x).numpy().astype("<f4").tofile(out)
        return
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for depth in (18, 50):
        model = make_model(depth, 7)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.1, 0.1)
        model.eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            logits = model(x)
        state = model.state_dict()
        torch.save(state, os.path.join(out, "%d.pth" % depth))
        save_safetensors(state, os.path.join(out, "%d.safetensors" % depth))
        with open(os.path.join(out, "%d.keys" % depth), "w") as f:
            f.write("\n".join(state.keys()) + "\n")
        x.numpy().astype("<f4").tofile(os.path.join(out, "%d.input.f32" % depth))
        logits.numpy().astype("<f4").tofile(os.path.join(out, "%d.logits.f32" % depth))
        if depth == 18:
            imagenet_head = make_model(18, 1000).state_dict()
            for k in list(imagenet_head.keys()):
                if not k.startswith("fc."):
                    imagenet_head[k] = state[k]
            torch.save(imagenet_head, os.path.join(out, "18-1000.pth"))
            missing = collections.OrderedDict(state)
            del missing["layer2.0.bn1.running_var"]
            torch.save(missing, os.path.join(out, "missing.pth"))
            extra = collections.OrderedDict(state)
            extra["layer9.weight"] = torch.zeros(3)
            torch.save(extra, os.path.join(out, "unexpected.pth"))
            shaped = collections.OrderedDict(state)
            shaped["conv1.weight"] = torch.zeros(64, 3, 3, 3)
            torch.save(shaped, os.path.join(out, "misshaped.pth"))
    torch.save({"w": Evil()}, os.path.join(out, "evil.pth"))
    open(os.path.join(out, "complete"), "w").close()


if __name__ == "__main__":
    main()
