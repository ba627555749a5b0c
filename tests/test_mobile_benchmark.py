"""Table-8 benchmark: a --quick run on tiny settings writes consistent JSON, markdown and PNG."""

from __future__ import annotations

import json

import pytest
import torch

from shufflenet.mobile.benchmark import cli
from tools.mobile_opprofile import main  # shufflenet-bench + --profile-ops (the per-op profiles of the docs)


@pytest.mark.slow
def test_quick_benchmark_writes_table_json_and_chart(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "bench"
    exported = ["ptl", "onnx"]  # the setup installs ONNX Runtime: a missing one fails here
    rc = main(
        [
            "--quick",
            "--models",
            "sn0.5",
            "megvii0.5",
            "alexnet",
            "--sizes",
            "64x96",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--runtimes",
            "eager",
            *exported,
            "--out",
            str(out),
            "--profile-ops",
            "--profile-runs",
            "2",
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert torch.get_num_threads() == threads  # the process's setting is restored
    res = json.loads((out / "benchmark.json").read_text())
    assert res["settings"]["sizes"] == [[64, 96]] and res["settings"]["threads"] == 1
    assert res["settings"]["interleaved"] is True and res["settings"]["input_layout"] == "nhwc"
    assert res["host"]["torch"] == torch.__version__ and res["host"]["arch"]
    for key in ("sn0.5", "megvii0.5", "alexnet"):
        for rt in ("eager", *exported):
            cell = res["cells"][key][rt]["64x96"]
            assert cell["n"] == 2 and len(cell["runs_ms"]) == 2 and len(cell["wall_runs_ms"]) == 2
            assert 0 < min(cell["runs_ms"]) <= cell["median_ms"] <= cell["p90_ms"] <= max(cell["runs_ms"])
        assert (out / "exported" / f"bench_{key}.ptl").is_file()
        # The ratios use the fastest exported runtime (eager only counts when nothing was exported).
        best = min(exported, key=lambda rt: res["cells"][key][rt]["64x96"]["median_ms"])
        assert res["fastest"][key]["64x96"]["runtime"] == best
        assert res["models"][key]["macs"]["64x96"] > 0
    assert res["models"]["megvii0.5"]["macs"] == res["models"]["sn0.5"]["macs"]  # same network, other code
    # MAC/s and the share of AlexNet's come from the cells, not typed in.
    eff = res["efficiency"]["sn0.5"]["64x96"]
    gmacs = res["models"]["sn0.5"]["macs"]["64x96"] / res["fastest"]["sn0.5"]["64x96"]["median_ms"] / 1e6
    assert eff["gmac_per_s"] == pytest.approx(gmacs)
    assert eff["share_of_alexnet"] == pytest.approx(gmacs / res["efficiency"]["alexnet"]["64x96"]["gmac_per_s"])
    (row,) = [r for r in res["ratios"] if r["num"] == "megvii0.5"]
    expect = res["fastest"]["megvii0.5"]["64x96"]["median_ms"] / res["fastest"]["sn0.5"]["64x96"]["median_ms"]
    assert row["fastest"]["64x96"] == pytest.approx(expect) and row["met"]["64x96"] == (expect >= 1.5)
    # Per-op-kind profiles of the profiled models through every runtime that gives per-op times, beside MAC shares.
    ops = res["op_profile"]
    assert set(ops["models"]) == {"sn0.5", "alexnet"} and ops["sizes"] == ["64x96"]  # megvii-style: not profiled
    sn = ops["models"]["sn0.5"]
    assert sum(v["macs"] for v in sn["macs"]["64x96"].values()) == res["models"]["sn0.5"]["macs"]["64x96"]
    assert set(sn["runtimes"]) == set(("eager", *exported))
    for rt, per in sn["runtimes"].items():
        prof = per["64x96"]
        assert {"grouped 1x1 conv", "depthwise conv", "channel shuffle / reshape", "add / ReLU", "pool"} <= set(prof)
        assert "conv (order not matched)" not in prof, rt
        assert sum(v["pct"] for v in prof.values()) == pytest.approx(100.0)
    assert {"dense conv (kxk)", "fc"} <= set(ops["models"]["alexnet"]["runtimes"]["ptl"]["64x96"])
    assert res["kernel_isa"]["host"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(res["kernel_isa"]["runtimes"]) == set(exported)
    ops_png = (out / "benchmark_ops.png").read_bytes()
    assert ops_png[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "benchmark.md").read_text()
    assert f"{res['cells']['sn0.5']['ptl']['64x96']['median_ms']:.1f}" in md and "torch " + torch.__version__ in md
    assert "megvii-style 0.5x / ours 0.5x" in md and "vs AlexNet" in md
    assert "Where the time goes" in md and "| grouped 1x1 conv | " in md and "Kernel ISA: host" in md
    png = (out / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert set(row["measured"]) == {"eager", "ptl", "onnx"} and "The same ratios per runtime" in md  # per runtime
    # A progress line per measurement (3 models x runtimes x 1 size) and per round.
    assert sum(line.startswith("[bench ") for line in printed.out.splitlines()) == 3 * (1 + len(exported))
    assert sum(" round " in line for line in printed.out.splitlines()) == 2


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--models", "resnet50"], "unknown benchmark model"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--sizes", "7"], "input size '7' is not valid"),
        (["--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_benchmark_bad_arguments(argv, expected, tmp_path, capsys):
    rc = cli(argv + ["--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.startswith("error:") and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


# --- kernel ISA, per-op profiles, rule of thumb -------------------------------------------------------------

TINY = "shufflenet_v1_x0_25_g3"  # the widths' unit structure (16 units, 3 stride-2) at a fraction of the cost


def test_kernel_isa_reports_what_each_runtime_says():
    from shufflenet.mobile import host, report

    isa = host.kernel_isa(["ptl", "onnx", "ncnn", "tflite", "eager"])  # pte: in the --quick test
    host = isa["host"]
    assert host["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert host["onednn_bf16"] == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert "eager" not in isa["runtimes"]  # nothing to say beyond the host's
    ptl = isa["runtimes"]["ptl"]
    assert ptl["xnnpack_enabled"] == torch.backends.xnnpack.enabled and ptl["xnnpack_isa"] == "not reported"
    assert ptl["aten_cpu_capability"] == host["torch_cpu_capability"]
    import ncnn  # the setup installs both runtimes: their reports are always checked
    import onnxruntime as ort

    onnx = isa["runtimes"]["onnx"]
    assert onnx["device"] == ort.get_device() and "CPUExecutionProvider" in onnx["providers"]
    assert onnx["version"] == ort.__version__ and onnx["mlas_isa"] == "not reported"
    got = isa["runtimes"]["ncnn"]
    queries = [n for n in dir(ncnn) if n.startswith("cpu_support_")]
    assert queries and all(got[n] is bool(getattr(ncnn, n)()) for n in queries)
    for rt in ("tflite",):  # either what the runtime says, or why it could not be asked
        info = isa["runtimes"][rt]
        assert ("error" in info and "No module" in info["error"]) or info["xnnpack_isa"] == "not reported"
    md = "\n".join(report.isa_markdown({"kernel_isa": isa}))
    assert f"get_cpu_capability()` {host['torch_cpu_capability']}" in md and "| ptl | XNNPACK" in md


def test_cpu_flags_from_cpuinfo_text():
    from shufflenet.mobile.host import cpu_flags

    x86 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm asimdhp asimddp sve i8mm cpuid\n"
    assert cpu_flags(x86) == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]
    assert cpu_flags(arm) == ["asimd", "asimdhp", "asimddp", "i8mm", "sve"]
    assert cpu_flags("nothing here") is None


def _bench():
    import shufflenet.mobile.benchmark as bench

    return bench


def test_conv_kinds_and_mac_shares_of_real_models():
    import torchvision

    from shufflenet import create_model
    from shufflenet.complexity import count_macs
    from shufflenet.mobile.rewrite import for_runtime
    from tools.mobile_opprofile import conv_kinds, mac_shares, pool_scopes

    counts = lambda kinds: {k: kinds.count(k) for k in set(kinds)}  # noqa: E731
    sn = create_model(TINY).eval()
    # 16 units x (1x1, depthwise, 1x1); the first unit's first 1x1 is dense (paper, Sec. 3.3); the stem conv.
    plain = counts(conv_kinds(sn))
    assert plain == {"dense conv (kxk)": 1, "dense 1x1 conv": 1, "grouped 1x1 conv": 31, "depthwise conv": 16}
    # The exported form adds the 3 stride-2 shortcuts' avg pool as a depthwise conv: still a pool.
    fast = for_runtime(sn, "ptl")
    assert counts(conv_kinds(fast)) == {**plain, "pool": 3}
    assert pool_scopes(fast) == ["stage2.0.shortcut", "stage3.0.shortcut", "stage4.0.shortcut"]
    # torchvision's V2 0.5x: 3 stride-2 units (2 depthwise, 3 dense 1x1), 13 stride-1 units (1 + 2), stem, conv5.
    v2 = torchvision.models.shufflenet_v2_x0_5().eval()
    assert counts(conv_kinds(v2)) == {"dense conv (kxk)": 1, "dense 1x1 conv": 36, "depthwise conv": 19}
    alexnet = create_model("alexnet").eval()
    assert counts(conv_kinds(alexnet)) == {"dense conv (kxk)": 5}
    for model, size in ((sn, (64, 96)), (v2, (64, 64)), (alexnet, (64, 64))):
        shares = mac_shares(model, size)
        assert sum(v["macs"] for v in shares.values()) == count_macs(model, size)  # the paper's count
        assert sum(v["pct"] for v in shares.values()) == pytest.approx(100.0)
    assert set(mac_shares(alexnet, (64, 64))) == {"dense conv (kxk)", "fc"}
    assert max(mac_shares(sn, (64, 96)).items(), key=lambda kv: kv[1]["macs"])[0] == "grouped 1x1 conv"


class _AllKinds(torch.nn.Module):
    """One layer of every op kind a ShuffleNet has, in a tiny net whose ONNX Runtime profile is recorded."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 12, 3, 2, 1)
        self.g1 = nn.Conv2d(12, 12, 1, groups=3)
        self.dw = nn.Conv2d(12, 12, 3, 1, 1, groups=12)
        self.pw = nn.Conv2d(12, 24, 1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        from shufflenet.models.shufflenet import channel_shuffle

        x = self.stem(x)
        y = channel_shuffle(torch.relu(self.g1(x)), 3)
        y = torch.relu(self.dw(y) + x)
        y = torch.nn.functional.max_pool2d(self.pw(y), 2)
        return self.fc(y.mean((2, 3)))


def test_ort_profile_aggregation_of_a_recorded_profile(tmp_path):
    import onnxruntime as ort

    from shufflenet.mobile.onnx_export import write_onnx
    from tools.mobile_opprofile import aggregate_ort_profile, onnx_file_for, profile_onnx

    torch.manual_seed(0)
    path = tmp_path / "kinds.onnx"
    write_onnx(_AllKinds().eval(), torch.randn(1, 3, 32, 32), path, ["logits"], "NCHW")
    assert onnx_file_for([str(path)], (48, 64)) == str(path)  # dynamic height/width (the graph's input)
    fixed = tmp_path / "fixed.onnx"  # a file whose sidecar says it was exported at one size only
    fixed.write_bytes(b"")
    (tmp_path / "fixed.onnx.json").write_text(
        json.dumps({"input": {"dynamic_axes": ["batch"], "sizes_hw_verified": [[32, 32]]}})
    )
    assert onnx_file_for([str(fixed), str(path)], (32, 32)) == str(fixed)
    assert onnx_file_for([str(fixed), str(path)], (48, 64)) == str(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "ort")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: torch.randn(1, 3, 32, 32).numpy()}
    for _ in range(3):
        sess.run(None, feed)
    events = json.loads(open(sess.end_profiling()).read())
    prof = aggregate_ort_profile(events, runs=2)
    must = {"dense conv (kxk)", "grouped 1x1 conv", "depthwise conv", "dense 1x1 conv", "fc", "pool"}
    assert must <= set(prof) and set(prof) - must <= {
        "channel shuffle / reshape",
        "add / ReLU",
        "layout copies / reorders",
        "other",
    }
    assert "Transpose" in prof["channel shuffle / reshape"]["ops"]  # the shuffle as ONNX writes it
    assert sum(v["pct"] for v in prof.values()) == pytest.approx(100.0)
    # One window: each kind is the plain sum of its nodes' kernel times in that call.
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    last = runs[-1]
    in_last = [
        e
        for e in events
        if e.get("cat") == "Node"
        and e["name"].endswith("_kernel_time")
        and last["ts"] <= e["ts"] <= last["ts"] + last["dur"]
    ]
    one = aggregate_ort_profile(events, runs=1)
    assert sum(v["ms"] for v in one.values()) == pytest.approx(sum(e["dur"] for e in in_last) / 1e3)
    # A call preempted in one node (the profiler's clock is wall time) and session set-up outside the calls
    # change nothing: each node counts its fastest call, and only nodes inside the calls count.
    noisy = [dict(e) for e in events]
    name = in_last[0]["name"]
    in_two = [e for e in noisy if e.get("name") == name and e["ts"] >= runs[-2]["ts"]]
    max(in_two, key=lambda e: e["dur"])["dur"] *= 1000  # the slower of its two calls
    noisy.append({**in_last[0], "ts": runs[0]["ts"] - 10_000, "dur": 10**9})
    assert aggregate_ort_profile(noisy, runs=2) == prof
    # The same through profile_onnx (its own session, the profiler's file removed); a pool scope turns a conv
    # into a pool.
    live = profile_onnx(path, torch.randn(1, 3, 32, 32), runs=2, pool_scopes=["dw"])
    assert "depthwise conv" not in live and "Conv" in live["pool"]["ops"]
    assert not list(tmp_path.glob("ort-profile-*"))


def test_profile_layer_types_matches_convolutions_in_order():
    from shufflenet import create_model
    from tools.mobile_opprofile import conv_kinds, profile_layer_types

    torch.set_num_threads(1)
    model = create_model(TINY).eval()

    def run(x):
        with torch.inference_mode():
            return model(x)

    x = torch.randn(1, 3, 32, 32)
    prof = profile_layer_types(run, x, conv_kinds(model), runs=2)
    assert {"grouped 1x1 conv", "depthwise conv", "dense conv (kxk)", "channel shuffle / reshape", "add / ReLU"} <= set(
        prof
    )
    assert "conv (order not matched)" not in prof and "aten::conv2d" in prof["grouped 1x1 conv"]["ops"]
    assert sum(v["pct"] for v in prof.values()) == pytest.approx(100.0)
    # A conv list that does not fit the calls is not forced onto them.
    wrong = profile_layer_types(run, x, conv_kinds(model)[:-1], runs=2)
    assert "conv (order not matched)" in wrong and "grouped 1x1 conv" not in wrong


def test_rule_of_thumb_per_runtime_and_on_the_fastest():
    from shufflenet.mobile import report

    cell = lambda ms: {"median_ms": ms}  # noqa: E731
    result = {
        "settings": {"runtimes": ["ptl", "onnx"], "sizes": [[224, 224]]},
        "models": {
            "sn0.5": {"label": "ShuffleNet 0.5x (g=3)", "macs": {"224x224": 38_000_000}},
            "sn1": {"label": "ShuffleNet 1x (g=3)", "macs": {"224x224": 152_000_000}},
        },
        "cells": {
            "sn0.5": {"ptl": {"224x224": cell(4.0)}, "onnx": {"224x224": cell(2.0)}},
            "sn1": {"ptl": {"224x224": cell(10.0)}, "onnx": {"224x224": cell(6.0)}},
        },
    }
    result["fastest"] = report.fastest(result)
    (row,) = report.rule_of_thumb(result)
    assert row["flops_ratio"] == pytest.approx(4.0) and row["predicted"] == pytest.approx(2.6)
    assert row["measured"]["224x224"] == pytest.approx(3.0)  # onnx is the fastest for both: 6 / 2
    assert row["per_runtime"] == {"ptl": {"224x224": pytest.approx(2.5)}, "onnx": {"224x224": pytest.approx(3.0)}}
    md = "\n".join(report.rule_markdown(result, ["224x224"]))
    for rt, v in (("fastest", "3.00x"), ("ptl", "2.50x"), ("onnx", "3.00x")):
        assert f"| ShuffleNet 1x (g=3) / ShuffleNet 0.5x (g=3) | {rt} | 4.0x | 2.60x | {v} |" in md


@pytest.mark.slow
def test_etdump_probe_says_whether_the_runtime_records_events(tmp_path):
    from executorch.exir import to_edge

    from tools.mobile_opprofile import etdump_probe

    class AddRelu(torch.nn.Module):  # a program of portable kernels: lowered in a second, probed the same way
        def forward(self, x):
            return torch.relu(x) + 1

    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "tiny.pte"
    path.write_bytes(to_edge(torch.export.export(AddRelu(), (x,))).to_executorch().buffer)
    ok, said = etdump_probe(path, x)
    # The pip runtime is built without the event tracer; a build with it writes a dump. Either is said plainly.
    assert said.startswith("ETDump written (") if ok else said.startswith("this ExecuTorch runtime records no ETDump")
    assert not list(tmp_path.glob("*.etdp"))
    ok2, said2 = etdump_probe(tmp_path / "missing.pte", x)
    assert not ok2 and "ETDump probe failed" in said2


def test_timed_networks_have_no_constant_layer():
    """A fresh ShuffleNet zero-initializes the last BatchNorm of each stride-1 branch; folded into its
    convolution that is an all-zero layer, which a constant-folding converter (LiteRT's) deletes, timing a
    smaller network than a trained model runs. Every benchmarked network has trained-like BatchNorm instead."""
    from torch import nn

    from shufflenet import create_model
    from shufflenet.mobile.benchmark import bench_models

    fresh = create_model("shufflenet_v1_x0_5_g3")
    assert any(isinstance(m, nn.BatchNorm2d) and not m.weight.any() for m in fresh.modules()), (
        "the fresh model no longer zero-initializes a branch: this test's premise changed"
    )
    for bm in bench_models():
        if bm.key in ("sn2", "megvii2"):  # same construction as 0.5x/1x; the 2x build costs seconds
            continue
        model = bm.build()
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(m.weight.abs().min() >= 0.5 for m in bns), bm.key
        assert all(m.running_var.min() >= 0.5 for m in bns), bm.key
