"""tools/roofline.py: per-layer counts, bytes, bounds, cache levels, the benchmark JSON beside the bound, the ncnn
param reader, the C kernels and the command line's bad-input errors. Fast: nothing here times a network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from shufflenet import create_model
from tools import roofline
from tools.roofline import Layer, Rates

# Multiply-adds of conv + fc, the paper's count, as `python -m shufflenet.complexity` (fvcore) gives them:
# ShuffleNet 0.5x g=3 at 224 (the paper's Table 1/8 entry: 38 MFLOPs), at 480x640, and AlexNet at 224.
SN05_MACS_224 = 37_589_856
SN05_MACS_480x640 = 227_683_200
ALEXNET_MACS_224 = 714_188_480

CACHES = {"L1": 48 * 1024, "L2": 2 * 1024 * 1024, "L3": 32 * 1024 * 1024}


@pytest.mark.parametrize(
    "name, size, macs",
    [
        ("shufflenet_v1_x0_5_g3", (224, 224), SN05_MACS_224),
        ("shufflenet_v1_x0_5_g3", (480, 640), SN05_MACS_480x640),
        ("alexnet", (224, 224), ALEXNET_MACS_224),
    ],
)
def test_layer_macs_sum_to_the_papers_count(name, size, macs):
    layers = roofline.count_layers(create_model(name), size)
    assert sum(lay.macs for lay in layers) == macs


def test_shufflenet_layers_by_kind():
    layers = roofline.count_layers(create_model("shufflenet_v1_x0_5_g3"), (224, 224))
    kinds = [lay.kind for lay in layers]
    # 16 units (3 of them stride 2): 16 depthwise convs, 13 residual adds, 3 concats, 32 pointwise convs (the
    # first one dense: its input is the 24-channel stem), 15 shuffles (none after that dense one), stem conv, fc
    assert kinds.count("depthwise conv") == 16
    assert kinds.count("add / ReLU") == 13
    assert kinds.count("concat / split") == 3
    assert kinds.count("dense 1x1 conv") == 1 and kinds.count("grouped 1x1 conv") == 31
    assert kinds.count("channel shuffle / reshape") == 15
    assert kinds.count("dense conv (kxk)") == 1 and kinds.count("fc") == 1
    # BatchNorm is folded and ReLU fused: neither appears as a layer of its own
    assert "other" not in kinds


def test_bytes_of_a_conv_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    (layer,) = roofline.count_layers(model, (32, 32))  # BN folded into the conv, ReLU fused
    assert layer.kind == "dense conv (kxk)"
    assert layer.macs == 8 * 16 * 16 * 3 * 3 * 3  # 55,296
    # fp32: input 3*32*32*4 = 12,288; output 8*16*16*4 = 8,192; weights 8*3*3*3*4 = 864; folded bias 8*4 = 32
    assert layer.bytes("fp32") == 12_288 + 8_192 + 864 + 32 == 21_376
    # int8: one byte per activation and weight, the bias stays 32-bit
    assert layer.bytes("int8") == 3_072 + 2_048 + 216 + 32 == 5_368


class _Unit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 1, bias=False)
        self.gconv = nn.Conv2d(12, 12, 1, groups=3, bias=False)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)

    def forward(self, x):
        x = self.stem(x)
        y = torch.channel_shuffle(torch.relu(self.gconv(x)), 3)
        return torch.relu(x + self.dw(y))


def test_grouped_conv_shuffle_and_add_by_hand():
    layers = roofline.count_layers(_Unit(), (8, 8))
    assert [lay.kind for lay in layers] == [
        "dense 1x1 conv",
        "grouped 1x1 conv",
        "channel shuffle / reshape",
        "depthwise conv",
        "add / ReLU",
    ]
    stem, g, shuffle, dw, add = layers
    assert stem.macs == 12 * 64 * 3 and stem.inputs == 3 * 64 and stem.outputs == 12 * 64
    assert g.macs == 12 * 64 * (12 // 3) and g.weights == 12 * 4 and g.biases == 12
    assert shuffle.inputs == shuffle.outputs == 12 * 64 and shuffle.macs == 0
    assert dw.macs == 12 * 64 * 9 and dw.weights == 12 * 9
    assert add.inputs == 2 * 12 * 64 and add.outputs == 12 * 64


def test_cache_level_selection():
    assert roofline.level_for(100, CACHES) == "L1"
    assert roofline.level_for(48 * 1024, CACHES) == "L1"
    assert roofline.level_for(48 * 1024 + 1, CACHES) == "L2"
    assert roofline.level_for(2 * 1024 * 1024, CACHES) == "L2"
    assert roofline.level_for(2 * 1024 * 1024 + 1, CACHES) == "L3"
    assert roofline.level_for(32 * 1024 * 1024 + 1, CACHES) == "DRAM"
    assert roofline.parse_caches("L1=48K,L2=2M,L3=32M") == CACHES


RATES = Rates(
    macs_per_s=1e9,  # 1 GMAC/s: 1e6 MACs = 1 ms
    bytes_per_s={"L1": 100e9, "L2": 10e9, "L3": 1e9, "DRAM": 0.1e9},
    caches=CACHES,
)


def test_bound_is_the_max_per_layer_and_the_sum_over_layers():
    layers = [
        # compute-bound: 1 ms of MACs; 4 * (1000 + 1000 + 0) = 8,000 B in L1 -> 80 ns
        Layer("a", "grouped 1x1 conv", 1_000_000, 1000, 1000),
        # memory-bound: 4 * (250,000 + 250,000) = 2,000,000 B -> L2 at 10 GB/s -> 0.2 ms; no MACs
        Layer("b", "add / ReLU", 0, 250_000, 250_000),
        # memory-bound in L3: 4 * (1,000,000 + 1,000,000) + 4 * 500,000 weights = 10 MB -> 10 ms; 2 ms of MACs
        Layer("c", "dense conv (kxk)", 2_000_000, 1_000_000, 1_000_000, 500_000),
    ]
    b = roofline.network_bound(layers, RATES)
    per = {p["name"]: p for p in b["layers"]}
    assert per["a"]["level"] == "L1" and per["a"]["limit"] == "compute"
    assert per["a"]["bound_s"] == pytest.approx(1e-3)
    assert per["b"]["level"] == "L2" and per["b"]["bound_s"] == pytest.approx(2e-4)
    assert per["c"]["level"] == "L3" and per["c"]["limit"] == "memory"
    assert per["c"]["bound_s"] == pytest.approx(10e-3)
    assert b["bound_s"] == pytest.approx(1e-3 + 2e-4 + 10e-3)
    assert b["compute_s"] == pytest.approx(3e-3)
    assert b["memory_bound_share"] == pytest.approx(10.2 / 11.2)
    assert b["by_kind"]["add / ReLU"]["bound_s"] == pytest.approx(2e-4)
    # fused: only the network's input (layer a's 1000), output (layer c's 1,000,000) and weights move:
    # 4 * (1000 + 1,000,000 + 500,000) = 6,004,000 B -> L3 at 1 GB/s = 6.004 ms > 3 ms of MACs
    assert b["fused"]["bytes"] == 6_004_000 and b["fused"]["level"] == "L3"
    assert b["fused"]["bound_s"] == pytest.approx(6.004e-3)


def test_int8_bound_moves_a_quarter_of_the_bytes():
    layers = [Layer("b", "add / ReLU", 0, 250_000, 250_000)]
    b8 = roofline.network_bound(layers, RATES, "int8")
    assert b8["bytes"] == 500_000 and b8["layers"][0]["level"] == "L2"
    assert b8["bound_s"] == pytest.approx(5e-5)


def _bench_json(bound_ms: float, kind_bound_ms: float) -> dict:
    return {
        "models": {"sn0.5": {"registered": "shufflenet_v1_x0_5_g3"}},
        "cells": {"sn0.5": {"onnx": {"224x224": {"median_ms": 3 * bound_ms}}}},
        "op_profile": {
            "models": {
                "sn0.5": {"runtimes": {"onnx": {"224x224": {"add / ReLU": {"ms": 2 * kind_bound_ms, "pct": 50.0}}}}}
            }
        },
    }


def test_measured_and_op_kind_rows_are_percent_of_bound():
    layers = [Layer("a", "grouped 1x1 conv", 1_000_000, 1000, 1000), Layer("b", "add / ReLU", 0, 250_000, 250_000)]
    b = roofline.network_bound(layers, RATES)
    bounds = {"sn0.5": {"224x224": b}}
    bench = _bench_json(b["bound_s"] * 1e3, 0.2)
    (row,) = roofline.measured_rows(bench, bounds)
    assert row["runtime"] == "onnx" and row["pct_of_bound"] == pytest.approx(300.0)
    assert row["pct_of_fused_bound"] == pytest.approx(100 * 3 * 1.2 / b["fused"]["bound_s"] / 1e3)
    rows = {r["kind"]: r for r in roofline.op_kind_rows(bench, bounds)}
    assert rows["add / ReLU"]["pct_of_bound"] == pytest.approx(200.0)
    assert rows["add / ReLU"]["excess_ms"] == pytest.approx(0.2)
    assert rows["grouped 1x1 conv"]["profiled_ms"] is None  # bound without a profiled time: shown, not invented
    (ex,) = roofline.excess_summary(list(rows.values()))
    assert ex["kind"] == "add / ReLU" and ex["share_of_total_excess"] == pytest.approx(100.0)


PARAM = """7767517
5 6
Input            data   0 1 data 0=224 1=200 2=3
Convolution      conv1  1 1 data c1 0=24 1=3 3=2 4=1 5=1 6=648 9=1
ShuffleChannel   sh     1 1 c1 s1 0=3
ConvolutionDepthWise g2 1 1 s1 c2 0=960 1=1 5=1 6=7680 7=3
Softmax          prob   1 1 c2 output
"""


def test_read_ncnn_param(tmp_path):
    p = tmp_path / "net.param"
    p.write_text(PARAM)
    info = roofline.read_ncnn_param(p)
    assert info.input == "data" and info.outputs == ("output",)
    assert info.groups == 3 and info.last_channels == 960
    assert info.fixed_hw == (200, 224)  # ncnn: 0=w, 1=h
    assert roofline.matching_model(info) == "shufflenet_v1_x1_0_g3"


def test_c_kernels_do_the_work_they_are_credited_with(tmp_path):
    dll, how = roofline.c_kernels(tmp_path)
    if dll is None:
        assert how.startswith("no C compiler") or "failed" in how
        return
    src = np.random.rand(1000).astype(np.float32)
    dst = np.zeros_like(src)
    dll.copy_reps(dst.ctypes.data, src.ctypes.data, src.size, 3)
    assert np.array_equal(dst, src)
    # every chain runs a <- a * 0.999 + 1e-3 from 0: after n steps a = (1 - 0.999^n) / 0.001 * 1e-3
    n = 50
    lanes = dll.lanes()
    expected = roofline._FMA_CHAINS * lanes * (1 - 0.999**n)
    assert dll.fma_reps(n) == pytest.approx(expected, rel=1e-4)


def test_roofline_cli_with_saved_host_figures(tmp_path, capsys):
    host = {
        "isa": "AVX2",
        "cpu": "test",
        "caches": CACHES,
        "peak_gmacs": {"torch.mm": 10.0, "FMA loop (C)": 100.0},
        "peak_int8_gops": {"onnxruntime MatMulInteger": 40.0},
        "bandwidth_gbs": {"memcpy loop (C)": {"L1": 100.0, "L2": 50.0, "L3": 20.0, "DRAM": 10.0}},
        "working_set_bytes": {"L1": 1, "L2": 2, "L3": 3, "DRAM": 4},
        "notes": {},
    }
    (tmp_path / "host.json").write_text(json.dumps({"host": host}))
    (tmp_path / "bench.json").write_text(json.dumps(_bench_json(5.0, 0.1)))
    out = tmp_path / "out"
    argv = ["--host-json", str(tmp_path / "host.json"), "--bench-json", str(tmp_path / "bench.json")]
    assert roofline.cli([*argv, "--models", "sn0.5", "--sizes", "224", "--out", str(out)]) == 0
    res = json.loads((out / "roofline.json").read_text())
    # the bound uses the library peak (10 GMAC/s), not the FMA loop's ceiling
    assert res["bound_uses"]["peak"] == "torch.mm"
    b = res["bounds"]["sn0.5"]["224x224"]
    assert b["macs"] == SN05_MACS_224 and b["compute_s"] == pytest.approx(SN05_MACS_224 / 10e9)
    (row,) = res["measured"]
    assert row["pct_of_bound"] == pytest.approx(100 * 15.0 / (b["bound_s"] * 1e3))
    md = (out / "roofline.md").read_text()
    assert "| sn0.5 | 224x224 |" in md and "| torch.mm | 10.0 | **yes** |" in md


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--sizes", "224x"], "size '224x'"),
        (["--models", "resnet"], "--models resnet"),
        (["--caches", "L1=48K"], "--caches"),
        (["--bench-json", "{tmp}/bad.json"], "not JSON"),
        (["--bench-json", "{tmp}/list.json"], "expected mobile/benchmark.py's benchmark.json"),
        (["--ncnn-param", "{tmp}/bad.json"], "not an ncnn param file"),
        (["--ncnn-param", "{tmp}/missing.param"], "cannot read"),
        (["--out", "{tmp}/bad.json"], "exists and is not a folder"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_written(tmp_path, capsys, extra, needle):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    assert roofline.cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not out.exists()


def test_ncnn_runner_times_a_param_with_empty_weights_at_any_input_size(tmp_path):
    import ncnn  # setup installs it: missing fails, never skips

    p = tmp_path / "tiny.param"
    p.write_text(
        "7767517\n3 3\n"
        "Input            data   0 1 data 0=16 1=16 2=3\n"
        "Convolution      conv   1 1 data c 0=8 1=3 4=1 5=1 6=216\n"
        "ShuffleChannel   sh     1 1 c out 0=2\n"
    )
    info = roofline.read_ncnn_param(p)
    run = roofline.ncnn_runner(info, None, roofline.NCNN_OPTIONS["fp32"])
    for h, w in [(16, 16), (20, 24)]:  # the Input layer's size is a hint: the blob's size wins
        arr = np.full((3, h, w), 0.01, dtype=np.float32)  # ncnn.Mat(arr) wraps arr's memory: keep arr alive
        (out,) = run(ncnn.Mat(arr).clone())
        ret, mat = out
        arr = np.array(mat)
        assert ret == 0 and arr.shape == (8, h, w)
        assert not arr.any()  # every weight and bias read as zero, as benchncnn loads it
