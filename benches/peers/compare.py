"""Side by side in one sitting: dualform's training-step bench against the PyTorch and JAX scripts beside this file.

Each round runs every command once, in turn (dualform, PyTorch, JAX for one model, then the next model); the table
gives every round's ms per step and the median over rounds of (the faster peer's time / dualform's time). The
machine (CPU model, vector units) is printed with it: ratios differ between CPUs.

usage (from the repository root, with a Python that has torch and jax, see README.md here):
    python3 benches/peers/compare.py --python peers-venv/bin/python [--rounds 3] [--models lsa-1,lsa-2,lsa-5,softmax-2]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = {
    "lsa-1": "train/step_batch_2048_d10_n10_layers_1",
    "lsa-2": "train/step_batch_2048_d10_n10_layers_2",
    "lsa-3": "train/step_batch_2048_d10_n10_layers_3",
    "lsa-4": "train/step_batch_2048_d10_n10_layers_4",
    "lsa-5": "train/step_batch_2048_d10_n10_layers_5",
    "softmax-2": "train/step_batch_2048_d10_n10_softmax_layers_2",
}
UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def dualform_ms(model):
    out = run(["cargo", "bench", "--locked", "-q", "-p", "dualform-benches", "--bench", "kernels", "--", "--exact",
               BENCH[model]])
    m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", out)
    if not m:
        sys.exit(f"error: no criterion time for {BENCH[model]} in:\n{out}")
    return float(m.group(1)) * UNITS[m.group(2)]


def peer_ms(python, script, args, threads):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"
    out = run([python, os.path.join(HERE, script), *args], env=env)
    m = re.search(r"ms_per_step=([0-9.]+)", out)
    if not m:
        sys.exit(f"error: no ms_per_step from {script} in:\n{out}")
    return float(m.group(1)), out.split("peer=")[1].split()[0]


def machine():
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    units = [u for u in ("sse2", "avx", "avx2", "fma", "avx512f") if u in flags]
    return f"{model}, {os.cpu_count()} logical CPUs, vector units: {' '.join(units) or 'unknown'}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="a Python with torch and jax")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="lsa-1,lsa-2,lsa-5,softmax-2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300, help="steps per peer run")
    a = ap.parse_args()
    models = a.models.split(",")
    for m in models:
        if m not in BENCH:
            sys.exit(f"error: unknown model {m}; one of {', '.join(BENCH)}")
    times = {m: {"dualform": [], "torch": [], "jax": []} for m in models}
    versions = set()
    for r in range(a.rounds):
        for m in models:
            kind, layers = m.split("-")
            times[m]["dualform"].append(dualform_ms(m))
            common = ["--layers", layers, "--steps", str(a.steps)]
            script = "torch_lsa.py" if kind == "lsa" else "torch_softmax.py"
            ms, v = peer_ms(a.python, script, common + ["--threads", str(a.threads)], a.threads)
            times[m]["torch"].append(ms)
            versions.add(v)
            if kind == "lsa":
                ms, v = peer_ms(a.python, "jax_lsa.py", common, a.threads)
                times[m]["jax"].append(ms)
                versions.add(v)
            print(f"round {r + 1}: {m}: " + ", ".join(f"{k} {t[-1]:.2f} ms" for k, t in times[m].items() if t),
                  file=sys.stderr)
    unit = os.environ.get("DUALFORM_SIMD", "the widest this CPU has")
    print(f"machine: {machine()}; peers: {', '.join(sorted(versions))}; {a.threads} threads; batch 2048, d = N = 10; "
          f"dualform's vector unit (DUALFORM_SIMD): {unit}\n")
    print("| model | PyTorch (ms/step) | JAX (ms/step) | dualform (ms/step) | faster peer / dualform (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs) or "-"
    for m in models:
        t = times[m]
        ratios = [min(p for p in (t["torch"][i], t["jax"][i] if t["jax"] else None) if p is not None)
                  / t["dualform"][i] for i in range(a.rounds)]
        print(f"| {m} | {fmt(t['torch'])} | {fmt(t['jax'])} | {fmt(t['dualform'])} | "
              f"{statistics.median(ratios):.1f}x ({min(ratios):.1f} to {max(ratios):.1f}) |")


if __name__ == "__main__":
    main()
