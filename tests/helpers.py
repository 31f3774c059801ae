"""Helpers shared by the tests that run the command-line scripts."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(script, *args, check=True, timeout=600):
    """Run ``python ROOT/script args...`` offline; with ``check``, fail with its stderr on a non-zero exit."""
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_cli(*args, check=True, timeout=600):
    """Run the ``entropy-lens`` command (``python -m model_inspector ARGS``) offline, like :func:`run_script`."""
    proc = subprocess.run([sys.executable, "-m", "model_inspector", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"entropy-lens {args[0] if args else ''} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def same_results(a: dict, b: dict) -> None:
    """Two results dicts hold the same samples (every column equal; metadata aside)."""
    import numpy as np

    keys = set(a) - {"metadata"}
    assert keys == set(b) - {"metadata"}
    for k in keys:
        assert len(a[k]) == len(b[k]), k
        for x, y in zip(a[k], b[k]):
            if isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, y, err_msg=k)
            else:
                assert x == y, k
