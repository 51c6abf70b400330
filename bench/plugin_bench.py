"""A plugin stage against the same stage built in, in one run.

    /usr/bin/python3 bench/plugin_bench.py [--epochs 5] [--threads 1]
(needs `cmake --build build --target benchmarks`, which builds
build/bench/libflowrun_bench_twin.so: the built-in color_jitter's own source
compiled outside the tree against the installed SDK, as a user's plugin is,
and registered as color_jitter_plugin). One flowrun run holds two flows over
the same JPEG folder (bench/make_imagefolder.py, cached in build/bench-data/):
decode -> color_jitter -> sink and decode -> color_jitter_plugin -> sink;
the flows take turns every epoch. Prints each stage's busy time per image
(the engine's own per-call cost included) and the ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "flowrun"))
    parser.add_argument("--plugin", default=os.path.join(ROOT, "build", "bench", "libflowrun_bench_twin.so"))
    parser.add_argument("--data", default=os.path.join(ROOT, "build", "bench-data"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not os.path.exists(args.plugin):
        sys.exit("no %s: build it with `cmake --build build --target benchmarks`" % args.plugin)
    subprocess.run([sys.executable, os.path.join(HERE, "make_imagefolder.py"), args.data], check=True)
    flows = []
    for name, stage in (("builtin", "color_jitter"), ("plugin", "color_jitter_plugin")):
        flows.append("src_{n} = imagefolder root=\"{d}\"\ndecode_{n} = decode\n"
                     "jitter_{n} = {s} brightness=0.4 contrast=0.4 saturation=0.4\nsink_{n} = sink\n"
                     "flow src_{n} -> decode_{n} -> jitter_{n} -> sink_{n}\n".format(n=name, d=args.data, s=stage))
    text = "plugin \"%s\"\nrun epochs=%d seed=0\n%s" % (args.plugin, args.epochs, "".join(flows))
    with tempfile.TemporaryDirectory() as tmp:
        graph = os.path.join(tmp, "plugin_bench.graph")
        open(graph, "w").write(text)
        summary = os.path.join(tmp, "summary.json")
        subprocess.run([args.binary, graph, "--threads", str(args.threads), "--summary-json", summary], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stages = json.load(open(summary))["stages"]
    per_image = {}
    for name in ("builtin", "plugin"):
        s = stages["jitter_" + name]
        per_image[name] = s["busy_s"] / s["items_in"] * 1e6
        print("%-28s %8.1f us/image over %d images" % (s["type"], per_image[name], s["items_in"]))
    print("plugin / built-in: %.3f" % (per_image["plugin"] / per_image["builtin"]))


if __name__ == "__main__":
    sys.exit(main())
