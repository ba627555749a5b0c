"""Developer tools that measure the project: benchmarks, the ablation runner, reports, test-data generation.

They import ``shufflenet``'s public API; the package never imports them (it must work after ``pip install .``).
Run one from the repository root, e.g. ``python -m tools.<name> --help``; their tests are ``tests/test_tools_*.py``.
"""
