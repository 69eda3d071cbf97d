"""The PyTorch baseline tests need the `baseline` extra, which `make test` installs.

Outside CI they are not collected when torch is missing; in CI (CI=true) a missing torch fails.
"""

import importlib.util
import os

if importlib.util.find_spec("torch") is None:
    if os.environ.get("CI"):
        raise ImportError("CI needs torch for the baseline tests: install the `baseline` extra")
    collect_ignore_glob = ["test_*.py"]
