"""Importing the package changes nothing in another library: no module of ``shufflenet`` installs a warning filter
when it is imported (filters an export needs are scoped to the call that needs them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from proc import run as watched_run

REPO = Path(__file__).resolve().parents[1]

# Every module of the package imported in a fresh interpreter with the warnings module's filter functions
# wrapped: each call is recorded with the module that made it, and the filter list is compared before and after.
CODE = r"""
import importlib, json, pkgutil, sys, warnings

calls = []
def spy(name, real):
    def wrapped(*args, **kwargs):
        calls.append([name, sys._getframe(1).f_globals.get("__name__", "?")])
        return real(*args, **kwargs)
    return wrapped

for name in ("filterwarnings", "simplefilter", "resetwarnings"):
    setattr(warnings, name, spy(name, getattr(warnings, name)))

import shufflenet
before = list(warnings.filters)
imported, failed = [], {}
for info in pkgutil.walk_packages(shufflenet.__path__, "shufflenet."):
    if info.name.endswith(".__main__"):  # runs a command when imported
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except ImportError as e:  # an optional integration whose framework is not installed here
        failed[info.name] = str(e)
ours = [c for c in calls if c[1].split(".")[0] == "shufflenet"]
theirs = {repr(f) for f in warnings.filters if f not in before}
print(json.dumps({"imported": imported, "failed": failed, "ours": ours,
                  "unchanged": [repr(f) for f in before if f not in warnings.filters],
                  "added": sorted(theirs), "third_party_calls": len(calls) - len(ours)}))
"""


def test_importing_every_module_leaves_warning_filters_alone():
    proc = watched_run([sys.executable, "-c", CODE], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "shufflenet.mobile.ptl" in res["imported"] and "shufflenet.mobile.benchmark" in res["imported"]
    assert len(res["imported"]) > 40, res["failed"]
    assert res["ours"] == []  # no shufflenet module called filterwarnings / simplefilter on import
    assert res["unchanged"] == []  # no filter that was there went away
    # what was added came from a third-party library's own import (e.g. sympy's "once" for its deprecations)
    assert all("shufflenet" not in f for f in res["added"])
    assert len(res["added"]) <= res["third_party_calls"]
