"""classification/benchmark.py (issue 11, training throughput): the quick mode's JSON/table/chart, the equivalence
check of the faster paths (channels_last, bf16 autocast, torch.compile) against eager fp32, the checker itself,
the LightningModule's speed options, and bad input."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from shufflenet.classification import benchmark as bm
from shufflenet.errors import run_cli

BF16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``--quick`` run (tiny models at 64 px, eager fp32/bf16 x NCHW/NHWC, v1 compiled, photo decoding)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--quick", "--workers", "0", "--sources", "photos", "--out", str(out)]
    if not BF16:
        argv += ["--precisions", "fp32"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert bm.main(argv) == 0
    return json.loads(out.read_text()), buf.getvalue(), out


def test_quick_json_table_and_chart(quick):
    result, table, out = quick
    train = result["train"]
    precisions = ["fp32", "bf16", "bf16dw"] if BF16 else ["fp32"]
    expected = {
        f"{m}/{p}/{layout}/eager" for m in ("v1", "v2") for p in precisions for layout in ("nchw", "channels_last")
    } | {"v1/fp32/channels_last/compiled"}
    assert set(train["variants"]) == expected
    for key, r in train["variants"].items():
        assert len(r["cpu_s"]) == len(r["wall_s"]) == result["config"]["rounds"] == 2
        assert math.isfinite(r["images_per_s_per_core"]) and r["images_per_s_per_core"] > 0, key
        # per core = batch / median CPU seconds of a step
        assert r["images_per_s_per_core"] == pytest.approx(8 / statistics.median(r["cpu_s"]))
    for setting, ratio in train["ratios_v1_over_v2"].items():
        v1, v2 = train["variants"][f"v1/{setting}"], train["variants"][f"v2/{setting}"]
        assert ratio == pytest.approx(v1["images_per_s_per_core"] / v2["images_per_s_per_core"])
        assert f"| {setting} |" in table
    assert "v1/fp32/channels_last/compiled" not in {f"v1/{s}" for s in train["ratios_v1_over_v2"]}  # no v2 peer
    assert train["best"]["v1"]["setting"] in {k.split("/", 1)[1] for k in expected if k.startswith("v1/")}
    assert all(math.isfinite(r["load_start"]) for r in train["rounds"])
    photos = result["data"]["photos"]
    assert photos["images"] == 6 * 2  # 6 package photos x --images 2 copies in quick mode
    assert photos["decode_augment_per_s_per_worker"] < min(photos["decode_per_s"], photos["augment_per_s"])
    assert photos["loader_workers=0"]["images_per_s_wall"] > 0
    assert "decode+augment img/s per worker" in table and "load (1-min avg)" in table
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_reprints_a_saved_result(quick, tmp_path, capsys):
    result, table, out = quick
    png = tmp_path / "again.png"
    assert bm.main(["--render", str(out), "--png", str(png)]) == 0
    assert capsys.readouterr().out.strip() == table.split("\n\nresults:")[0].strip()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_faster_paths_compute_the_same_loss_and_update(quick):
    """channels_last, bf16 autocast and torch.compile: same first loss and same loss change over one SGD update as
    eager fp32 NCHW (from the same weights and batch), within the precision's tolerance."""
    variants = quick[0]["train"]["variants"]
    for model in ("v1", "v2"):
        ref = variants[f"{model}/fp32/nchw/eager"]["warmup_losses"]
        assert abs(ref[1] - ref[0]) > 1e-3  # the update moves the loss well beyond fp32 noise: the check can fail
    for key, r in variants.items():
        if key.endswith("fp32/nchw/eager"):
            continue
        assert r["same_loss"], (key, r["loss_rel_diff_vs_eager_fp32"], r["update_rel_diff_vs_eager_fp32"])
        assert r["tolerances"] == {"loss": bm.LOSS_RTOL[r["precision"]], "update": bm.UPDATE_RTOL[r["precision"]]}
    assert variants["v1/fp32/channels_last/compiled"]["loss_rel_diff_vs_eager_fp32"] < 1e-4


def test_bf16dw_keeps_keys_and_runs_depthwise_in_fp32():
    """The bf16dw policy: every depthwise conv (and only those) computes in fp32 under autocast, same keys."""
    model = bm.model_builders(quick=True)["v1"][1]()
    keys = list(model.state_dict())
    dw = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    assert bm.depthwise_in_fp32(model) == len(dw) == 3 and list(model.state_dict()) == keys
    x = torch.randn(2, dw[0].in_channels, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dw[0](x).dtype == torch.float32
        assert (
            model.stage2[0].gconv2[0](torch.randn(2, model.stage2[0].gconv2[0].in_channels, 8, 8)).dtype
            == torch.bfloat16
        )


def test_checker_flags_a_path_that_does_not_update(monkeypatch):
    """The equivalence check has teeth: a variant whose optimizer step is lost (same forward) is reported."""
    builders = bm.model_builders(quick=True)
    broken = bm.Variant("v1", "fp32", "channels_last", "eager")
    real_step = bm.TrainRunner.step

    def step(self):
        if self.variant == broken:
            self.opt.step = lambda: None  # gradients computed, never applied
        return real_step(self)

    monkeypatch.setattr(bm.TrainRunner, "step", step)
    res = bm.benchmark_training([bm.Variant("v1", "fp32", "nchw", "eager"), broken], builders, 4, 64, 1, 1)
    r = res["variants"][broken.key]
    assert r["loss_rel_diff_vs_eager_fp32"] < 1e-4  # the forward agrees ...
    assert r["update_rel_diff_vs_eager_fp32"] > 0.5 and not r["same_loss"]  # ... the update does not


def test_lightning_module_speed_options_keep_function_and_keys():
    """ImageClassifier(channels_last=True, compile_model=True): NHWC weights, the model compiled in place (the
    mechanism whose training numerics the quick benchmark checks above), same checkpoint keys; with channels_last
    the same loss and gradients as the default module on one training batch."""
    from shufflenet.classification.module import ImageClassifier

    kw = dict(arch="shufflenet_v1_x0_5_g3", num_classes=10, model_kwargs={"stage_repeats": (1, 1, 1)})
    torch.manual_seed(0)
    plain = ImageClassifier(**kw)
    torch.manual_seed(0)
    nhwc = ImageClassifier(**kw, channels_last=True)
    torch.manual_seed(0)
    compiled = ImageClassifier(**kw, channels_last=True, compile_model=True)
    assert list(nhwc.state_dict()) == list(compiled.state_dict()) == list(plain.state_dict())
    assert nhwc.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert compiled.model._compiled_call_impl is not None and plain.model._compiled_call_impl is None
    x, y = torch.randn(4, 3, 64, 64), torch.arange(4)
    losses = []
    for m in (plain, nhwc):
        m.train()
        loss = m.criterion(m(x), y)
        loss.backward()
        losses.append((float(loss.detach()), m.model.conv1[0].weight.grad.clone()))
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-5)
    torch.testing.assert_close(losses[1][1], losses[0][1], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--precisions", "fp16"], "unknown precision"),
        (["--layouts", "nhwc"], "unknown layout"),
        (["--sources", "/nonexistent/folder"], "expected 'photos', 'cifar' or a folder"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--render", "/nonexistent/bench.json"], "not a benchmark result"),
    ],
)
def test_bad_input_is_one_error_line_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "b.json"
    assert run_cli(bm.main, argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.iterdir())
