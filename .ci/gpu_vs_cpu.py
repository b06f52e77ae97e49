"""Issue 30's bar for the GPU path, read off two comparisons: every objective trained with the same
seed on the GPU gives the 5-shot accuracy of its CPU run within 0.5 points.

    python .ci/gpu_vs_cpu.py GPU_COMPARE_JSON          # against docs/compare.md's CPU table
    python .ci/gpu_vs_cpu.py GPU_COMPARE_JSON CPU_COMPARE_JSON

GPU_COMPARE_JSON is what `python demos/compare.py --device cuda --threads 1 --out DIR` writes
(DIR/compare.json). The CPU side is docs/compare.md's table (its command: `python docs/numbers.py
--commands`), or another compare.json. Prints one line per method and exits 1 when one is off
by more than the bar or missing on the GPU.
"""
import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAR = 0.005   # half a point of 5-shot accuracy


def cpu_fewshot(path=None):
    """{method: 5-shot accuracy} of the CPU run: a compare.json, or docs/compare.md's table."""
    if path is not None:
        with open(path, encoding="utf-8") as f:
            return {row["method"]: row["fewshot"] for row in json.load(f) if "fewshot" in row}
    spec = importlib.util.spec_from_file_location("registry", os.path.join(ROOT, "docs",
                                                                           "numbers.py"))
    registry = importlib.util.module_from_spec(spec)   # docs/numbers.py, the numbers README quotes
    spec.loader.exec_module(registry)
    return {entry.record["method"]: float(entry.quoted.rstrip("%")) / 100
            for entry in registry.table_numbers("docs/compare.md", "the full table")
            if entry.key == "fewshot" and not entry.record["method"].startswith(("raw", "PCA",
                                                                                 "random"))}


def main(gpu_path, cpu_path=None):
    with open(gpu_path, encoding="utf-8") as f:
        gpu = {row["method"]: row["fewshot"] for row in json.load(f) if "fewshot" in row}
    failed = 0
    for method, on_cpu in cpu_fewshot(cpu_path).items():
        on_gpu = gpu.get(method)
        if on_gpu is None:
            print(f"{method:>14}: CPU {on_cpu:.1%}, not run on the GPU: FAIL")
            failed += 1
            continue
        ok = abs(on_gpu - on_cpu) <= BAR + 5e-4   # + the rounding of the CPU table's 0.1%
        failed += not ok
        print(f"{method:>14}: CPU {on_cpu:.1%}, GPU {on_gpu:.1%}, "
              f"{100 * (on_gpu - on_cpu):+.1f} points: {'ok' if ok else 'FAIL'}")
    print(f"{failed} method(s) outside {100 * BAR:.1f} points" if failed else
          f"every method within {100 * BAR:.1f} points")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
