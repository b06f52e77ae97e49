"""The benchmark (benchmark.py) and its workloads: minienc beside hand-written NumPy floors and
PyTorch twins, step for step. Scripts that report, never tests; not part of the minienc package."""
