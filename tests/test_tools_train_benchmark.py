"""``python -m tools.train_benchmark`` (training throughput): the quick mode's JSON/table/chart, the equivalence
of the faster paths (channels_last, bf16 autocast, torch.compile) with eager fp32, the checker itself, the
LightningModule's speed options, and bad input (argument errors before any machine capability)."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from shufflenet.errors import run_cli
from tools import train_benchmark as bm


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``--quick`` run (tiny models at 64 px, eager fp32 x NCHW/NHWC, v1 compiled, photo decoding). fp32 only,
    so that it runs the same on every CPU; the bf16 paths are checked below through :func:`bm.benchmark_training`
    (autocast computes bf16 on any CPU, only slower without native kernels)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--quick", "--workers", "0", "--sources", "photos", "--out", str(out), "--precisions", "fp32"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert bm.main(argv) == 0
    return json.loads(out.read_text()), buf.getvalue(), out


def test_quick_json_table_and_chart(quick):
    result, table, out = quick
    train = result["train"]
    expected = {f"{m}/fp32/{layout}/eager" for m in ("v1", "v2") for layout in ("nchw", "channels_last")} | {
        "v1/fp32/channels_last/compiled"
    }
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


def test_an_in_process_run_gives_the_callers_thread_count_back(tmp_path, capsys):
    """main() runs its loop with --threads and then gives the caller its own count back."""
    torch.set_num_threads(2)  # the caller's (tests/conftest.py restores the session's after the test)
    argv = ["--quick", "--no-data", "--precisions", "fp32", "--layouts", "nchw", "--modes", "eager"]
    assert bm.main(argv + ["--threads", "1", "--out", str(tmp_path / "b.json")]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["config"]["threads"] == 1 and result["machine"]["threads"] == 1
    assert torch.get_num_threads() == 2


def test_render_reprints_a_saved_result(quick, tmp_path, capsys):
    result, table, out = quick
    png = tmp_path / "again.png"
    assert bm.main(["--render", str(out), "--png", str(png)]) == 0
    assert capsys.readouterr().out.strip() == table.split("\n\nresults:")[0].strip()
    assert png.read_bytes()[:4] == b"\x89PNG"


# Bounds on each of the two warm-up losses of a variant against eager fp32 NCHW (same weights, same batch; the loss
# is ~ln(1000) = 6.9 at initialisation). The loss change over the SGD update between them, a2 - a1 against b2 - b1,
# then differs by at most twice the bound: |(a2 - a1) - (b2 - b1)| <= |a1 - b1| + |a2 - b2|.
#  * fp32 reorderings (channels_last, torch.compile) sum the same products in another order: a relative error of a
#    few float32 roundings (u = 6e-8) per layer over ~20 layers, ~1e-6 of the loss. Bound 1e-4 absolute: 15 ppm.
#  * bf16 autocast rounds the inputs and weights of every conv/linear to 8 significant bits (u = 2**-8 = 3.9e-3);
#    the cross-entropy is computed in fp32 from bf16 logits, and a logit error moves the loss by at most twice its
#    size (the softmax gradient has L1 norm <= 2) while the logits are far smaller than the loss at
#    initialisation. Bound: one bf16 rounding of the loss itself, u * 6.9 = 0.027 (measured: ~1e-3).
FP32_REORDER_BOUND = 1e-4
BF16_BOUND = 2**-8 * 6.9


def _assert_same_losses(variants, bound_of):
    for model in {r["model"] for r in variants.values()}:
        ref = variants[f"{model}/fp32/nchw/eager"]["warmup_losses"]
        for key, r in variants.items():
            if r["model"] != model or key.endswith("fp32/nchw/eager"):
                continue
            bound = bound_of(r)
            # the check has teeth: a lost update (a2 == a1) is beyond twice the bound
            assert 2 * bound < abs(ref[1] - ref[0]), (key, ref)
            (a1, a2), (b1, b2) = r["warmup_losses"], ref
            assert abs(a1 - b1) <= bound and abs(a2 - b2) <= bound, (key, r["warmup_losses"], ref, bound)
            assert r["same_loss"], key  # and the benchmark's own verdict says so


def test_faster_paths_compute_the_same_loss_and_update(quick):
    """channels_last and torch.compile (fp32): the same first loss and the same loss after one SGD update as eager
    fp32 NCHW, within the fp32 reordering bound above."""
    variants = quick[0]["train"]["variants"]
    assert {r["precision"] for r in variants.values()} == {"fp32"}
    _assert_same_losses(variants, lambda r: FP32_REORDER_BOUND)


def test_bf16_paths_compute_the_same_loss_and_update():
    """ShuffleNet v1 under bf16 autocast and bf16 with depthwise convs in fp32 (NCHW and channels_last): within one
    bf16 rounding of the loss of eager fp32 NCHW, before and after one SGD update (the benchmark's two warm-up
    steps). Runs on any CPU (autocast computes bf16 where oneDNN has no native kernels, only slower), so the verdict
    is the same everywhere."""
    build = bm.model_builders(quick=True)["v1"][1]
    variants = [bm.Variant("v1", "fp32", "nchw", "eager")] + [
        bm.Variant("v1", p, layout, "eager") for p in ("bf16", "bf16dw") for layout in ("nchw", "channels_last")
    ]
    res = {}
    for v in variants:
        runner = bm.TrainRunner(v, build, batch_size=8, size=64)
        res[v.key] = {**vars(v), "warmup_losses": [runner.step(), runner.step()]}
    bm.judge_equivalence(res)
    _assert_same_losses(res, lambda r: BF16_BOUND)


def test_bf16dw_keeps_keys_and_runs_depthwise_in_fp32():
    """The bf16dw policy: every depthwise conv (and only those) computes in fp32 under autocast, same keys."""
    model = bm.model_builders(quick=True)["v1"][1]()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def depthwise():
        return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]

    assert len(depthwise()) == 3 and not any(isinstance(m, bm.Fp32Conv2d) for m in depthwise())
    assert bm.depthwise_in_fp32(model) == 3
    dw = depthwise()
    assert len(dw) == 3 and all(type(m) is bm.Fp32Conv2d for m in dw)
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the same weights
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


@pytest.mark.parametrize("has_bf16", [True, False], ids=["bf16-cpu", "no-bf16-cpu"])
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--precisions", "fp16"], "unknown precision"),
        (["--layouts", "nhwc"], "unknown layout"),
        (["--sources", "/nonexistent/folder"], "expected 'photos' or a folder"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--render", "/nonexistent/bench.json"], "not a benchmark result"),
    ],
)
def test_bad_input_is_one_error_line_before_any_work(tmp_path, capsys, monkeypatch, argv, message, has_bf16):
    """A typo is reported as such whatever the CPU can do: the default precisions include bf16, and a CPU without
    native bf16 (simulated here) must still hear about the bad argument, not about bf16."""
    monkeypatch.setattr(bm, "bf16_supported", lambda: has_bf16)
    out = tmp_path / "b.json"
    assert run_cli(bm.main, argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bf16_on_a_cpu_without_it_is_one_error_line(tmp_path, capsys, monkeypatch):
    """Valid arguments asking for bf16 on a CPU without native bf16 (simulated): one line naming the fix."""
    monkeypatch.setattr(bm, "bf16_supported", lambda: False)
    out = tmp_path / "b.json"
    assert run_cli(bm.main, ["--quick", "--precisions", "bf16", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bf16 asked for") and "--precisions fp32" in err and err.count("\n") == 1
    assert not out.exists()
