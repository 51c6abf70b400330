"""What the CPU gives each side of a benchmark, printed beside its figures.

flowrun's side from `flowrun --version` (its "CPU:" line: the vector
extensions CPUID reports, the Highway target its pixel kernels dispatched to,
what precision=auto picks on the CPU); PyTorch's from the interpreter that
runs the benchmark (ATen's CPU capability: the widest kernels it dispatches
to, "AVX2" or "AVX512"). Both are run-time facts of this machine.
"""
import re
import subprocess


def flowrun_cpu(binary):
    """{'extensions': 'avx2 avx512f ...', 'kernels': 'AVX3_DL', 'auto': 'bf16'} from flowrun --version."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^CPU: (.*); pixel kernels: (\S+); precision=auto on the CPU: (\S+)$", out, re.M)
    if not m:  # a build from before issue 25: scalar pixel kernels, fp32 on the CPU
        return {"extensions": "?", "kernels": "scalar (no CPU: line)", "auto": "fp32"}
    return {"extensions": m.group(1), "kernels": m.group(2), "auto": m.group(3)}


def torch_cpu():
    """ATen's CPU capability in the torch this interpreter imports ("AVX2", "AVX512", ...)."""
    import torch
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if get:  # torch >= 2.0
        return get()
    m = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
    return m.group(1) if m else "unknown"


def header(binary):
    """The one-line summary a benchmark prints first."""
    ours = flowrun_cpu(binary)
    return "CPU: %s; flowrun's pixel kernels: %s, precision=auto: %s; PyTorch's kernels: %s" % (
        ours["extensions"], ours["kernels"], ours["auto"], torch_cpu())
