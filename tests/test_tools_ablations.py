"""``python -m tools.ablations``: a two-row, two-seed, five-step Table 3 on the repository's real CIFAR-10 images
(``tests/data/cifar10``): output structure, interleaving, resumption, settings refusal, bad input; and the verdicts
(``judge``, the claims, the orderings) on known errors through a fake training function."""

from __future__ import annotations

import json
import re

import pytest

from tools import ablations
from tools.ablations import cli as main

ROWS = ["shufflenet_v1_x0_25_g3", "shufflenet_v1_x0_25_g3_noshuffle"]


def _argv(root, out, *extra):
    return [
        "table3",
        "--data.root",
        str(root),
        "--steps",
        "5",
        "--seeds",
        "2",
        "--batch-size",
        "16",
        "--image-size",
        "32",
        "--width",
        "0.25",
        "--rows",
        *ROWS,
        "--out",
        str(out),
        "--num-workers",
        "0",
        "--threads",
        "1",
        "--accelerator",
        "cpu",
        *extra,
    ]


def _progress(text):
    return re.findall(r"^\[(\d+)/(\d+)\] (\S+) seed (\d+): val top-1 err ([\d.]+) %.*ETA", text, flags=re.M)


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "runs").glob("*.json"))}


def test_table3_outputs_resume_and_settings(tmp_path, cifar_root, capsys):
    out = tmp_path / "t3"
    assert main(_argv(cifar_root, out)) == 0
    lines = _progress(capsys.readouterr().out)
    # one line per finished run, interleaved: every row for seed 0, then every row for seed 1
    assert [(name, int(seed)) for _, _, name, seed, _ in lines] == [
        (ROWS[0], 0),
        (ROWS[1], 0),
        (ROWS[0], 1),
        (ROWS[1], 1),
    ]
    assert [int(i) for i, _, _, _, _ in lines] == [1, 2, 3, 4] and {n for _, n, _, _, _ in lines} == {"4"}

    res = json.loads((out / "results.json").read_text())
    for key in ("table", "settings", "seeds", "rows", "orderings", "claims", "runs", "complete", "noise_rule"):
        assert key in res, key
    assert res["table"] == "table3" and res["complete"] and res["seeds"] == [0, 1]
    assert res["settings"]["steps"] == 5 and res["settings"]["batch_size"] == 16 and res["settings"]["image_size"] == 32
    assert [r["name"] for r in res["rows"]] == ROWS
    for r in res["rows"]:
        assert r["n_seeds"] == 2 and len(r["errs"]) == 2 and r["std_err"] is not None
        assert 0 <= r["mean_err"] <= 100 and r["paper_err"] in (55.0, 56.3) and r["paper_mflops"] == 13
    assert len(res["runs"]) == 4
    for run in res["runs"]:
        assert run["steps"] == 5 and run["wall_s"] > 0 and run["images_per_s"] > 0 and 0 <= run["val_top1_err"] <= 100
        assert run["val_images"] == 300
    (order,) = res["orderings"]
    assert order["paper"] == ROWS and sorted(order["measured"]) == sorted(ROWS) and isinstance(order["same"], bool)
    (claim,) = res["claims"]
    assert claim["claim"] == "0.25x g=3: shuffle beats no shuffle"
    assert claim["paper_gain"] == pytest.approx(1.3)
    assert claim["verdict"] in ("reproduced", "not reproduced", "within noise")

    md = (out / "results.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert len(table) == 2 and all(f"`{name}`" in ln for name, ln in zip(ROWS, table))
    assert "| row | MFLOPs | paper err (%) | mean err (%) ± std | n seeds |" in md
    assert "## The paper's claims" in md and "shuffle beats no shuffle" in md and claim["verdict"] in md
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "settings.json").read_text())["steps"] == 5

    # a second invocation reruns nothing
    before = _mtimes(out)
    assert len(before) == 4
    assert main(_argv(cifar_root, out)) == 0
    text = capsys.readouterr().out
    assert _progress(text) == [] and "4 already done, 0 to run" in text
    assert _mtimes(out) == before

    # delete one run file: only that run is trained again
    gone = f"{ROWS[1]}_s0.json"
    (out / "runs" / gone).unlink()
    assert main(_argv(cifar_root, out)) == 0
    lines = _progress(capsys.readouterr().out)
    assert [(name, int(seed)) for _, _, name, seed, _ in lines] == [(ROWS[1], 0)]
    after = _mtimes(out)
    assert set(after) == set(before)
    assert {k: v for k, v in after.items() if k != gone} == {k: v for k, v in before.items() if k != gone}

    # other settings in the same --out are refused, naming the differing keys; nothing is trained
    steps_at = _argv(cifar_root, out).index("--steps") + 1
    argv = _argv(cifar_root, out)
    argv[steps_at] = "6"
    assert main(argv + ["--batch-size", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "steps" in err[0] and "batch_size" in err[0]
    assert "image_size" not in err[0].split("differ")[0]
    assert _mtimes(out) == after


@pytest.mark.parametrize(
    "argv, says",
    [
        (["table3", "--data.root", "{tmp}/missing", "--steps", "5"], "does not exist"),
        (["table3", "--data.root", "{root}", "--steps", "5", "--rows", "shufflenet_v1_x9_g3"], "unknown row"),
        (["table2", "--data.root", "{root}", "--steps", "5", "--width", "0.75"], "no 0.75x row"),
        (["table4", "--data.root", "{root}", "--steps", "5", "--width", "20"], "no 20 MFLOPs row"),
        (["table3", "--data.root", "{root}", "--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, cifar_root, capsys, argv, says):
    argv = [a.format(tmp=tmp_path, root=cifar_root) for a in argv] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["table9", "--data.root", "{root}", "--steps", "5"], "invalid choice: 'table9'"),
        (["table3", "--steps", "5"], "--data.root"),
    ],
)
def test_command_line_errors_are_argparse_usage_errors(tmp_path, cifar_root, capsys, argv, says):
    argv = [a.format(root=cifar_root) for a in argv] + ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error:" in err[-1] and says in err[-1], err
    assert not (tmp_path / "out").exists()


# --- verdicts on known errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "gain, se, verdict",
    [
        (1.0, 0.4, "reproduced"),  # 1.0 > 2 x 0.4
        (0.8, 0.4, "within noise"),  # exactly 2 se is not beyond noise
        (-0.8, 0.4, "within noise"),
        (-1.0, 0.4, "not reproduced"),
        (0.3, None, "reproduced (1 seed, noise unknown)"),
        (-0.3, None, "not reproduced (1 seed, noise unknown)"),
        (0.0, None, "not reproduced (1 seed, noise unknown)"),
        (None, 0.4, "not measured"),
    ],
)
def test_judge(gain, se, verdict):
    assert ablations.NOISE_SIGMAS == 2.0
    assert ablations.judge(gain, se) == verdict


def _fake_runner(errors):
    """A ``train_fn`` returning the given validation error per (row, seed), and the list of calls it got."""
    calls = []

    def train_fn(row, seed, settings, num_workers=1, accelerator="auto"):
        calls.append((row.name, seed))
        return {
            "row": row.name,
            "seed": seed,
            "val_top1_err": errors[row.name][seed],
            "steps": settings["steps"],
            "train_wall_s": 1.0,
            "wall_s": 1.0,
            "images_per_s": 10.0,
        }

    return train_fn, calls


G3, G3N, G8, G8N = (
    "shufflenet_v1_x0_25_g3",
    "shufflenet_v1_x0_25_g3_noshuffle",
    "shufflenet_v1_x0_25_g8",
    "shufflenet_v1_x0_25_g8_noshuffle",
)


def _table3(tmp_path, cifar_root, errors, seeds=3):
    train_fn, calls = _fake_runner(errors)
    exp = ablations.Experiment(
        table="table3",
        data_root=str(cifar_root),
        steps=5,
        seeds=seeds,
        widths=[0.25],
        out=str(tmp_path / "t3"),
        print_fn=lambda line: None,
    )
    return ablations.run_table(exp, train_fn=train_fn), calls


def test_claims_and_orderings_on_known_errors(tmp_path, cifar_root):
    """Known errors (3 seeds per row, std 1, so the se of a difference of means is sqrt(2/3)): the g=3 shuffle
    claim is reproduced (gain 5), the g=8 one is not (gain -6), nor is "the gain is larger at g=8" (-11); the
    measured ordering differs from the paper's."""
    errors = {
        G3: [50.0, 51.0, 52.0],  # mean 51
        G3N: [55.0, 56.0, 57.0],  # mean 56: shuffle helps by 5
        G8: [60.0, 61.0, 62.0],  # mean 61
        G8N: [54.0, 55.0, 56.0],  # mean 55: shuffle hurts by 6
    }
    res, calls = _table3(tmp_path, cifar_root, errors)
    assert calls == [(n, s) for s in range(3) for n in (G3, G3N, G8, G8N)]  # interleaved, each once
    claims = {c["claim"]: c for c in res["claims"]}
    c3 = claims["0.25x g=3: shuffle beats no shuffle"]
    assert c3["measured_gain"] == pytest.approx(5.0) and c3["noise_se"] == pytest.approx((2 / 3) ** 0.5)
    assert c3["verdict"] == "reproduced" and c3["paper_gain"] == pytest.approx(56.3 - 55.0)
    c8 = claims["0.25x g=8: shuffle beats no shuffle"]
    assert c8["measured_gain"] == pytest.approx(-6.0) and c8["verdict"] == "not reproduced"
    larger = claims["0.25x: the shuffle gain is larger at g=8 than at g=3"]
    assert larger["measured_gain"] == pytest.approx(-11.0) and larger["verdict"] == "not reproduced"
    assert larger["paper_gain"] == pytest.approx((56.5 - 52.7) - (56.3 - 55.0))
    (order,) = res["orderings"]
    assert order["paper"] == [G8, G3, G3N, G8N]  # 52.7 < 55.0 < 56.3 < 56.5
    assert order["measured"] == [G3, G8N, G3N, G8]  # 51 < 55 < 56 < 61
    assert order["same"] is False and order["kendall_tau"] == pytest.approx(-1 / 3)  # 2 of 6 pairs agree


def test_within_noise_and_same_ordering(tmp_path, cifar_root):
    """Known errors in the paper's order, gaps smaller than the noise: the ordering is 'same', the verdict 'within
    noise'."""
    errors = {
        G8: [50.0, 52.0, 54.0],  # mean 52, std 2
        G3: [50.5, 52.5, 54.5],  # mean 52.5
        G3N: [51.0, 53.0, 55.0],  # mean 53
        G8N: [51.5, 53.5, 55.5],  # mean 53.5
    }
    res, _ = _table3(tmp_path, cifar_root, errors)
    (order,) = res["orderings"]
    assert order["measured"] == order["paper"] == [G8, G3, G3N, G8N]
    assert order["same"] is True and order["kendall_tau"] == pytest.approx(1.0)
    c3 = next(c for c in res["claims"] if c["claim"] == "0.25x g=3: shuffle beats no shuffle")
    assert c3["measured_gain"] == pytest.approx(0.5) and c3["verdict"] == "within noise"  # se 2 x sqrt(2/3)
