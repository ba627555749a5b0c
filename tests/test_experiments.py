"""``python -m shufflenet.experiments`` (issue 12): a two-row, two-seed, five-step Table 3 on the repository's
real CIFAR-10 images (``tests/data/cifar10``): output structure, interleaving, resumption, settings refusal,
bad input."""

from __future__ import annotations

import json
import re

import pytest

from shufflenet.experiments import main

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
        (["table9", "--data.root", "{root}", "--steps", "5"], "unknown table 'table9'"),
        (["table3", "--data.root", "{root}", "--steps", "5", "--rows", "shufflenet_v1_x9_g3"], "unknown row"),
        (["table2", "--data.root", "{root}", "--steps", "5", "--width", "0.75"], "no 0.75x row"),
        (["table4", "--data.root", "{root}", "--steps", "5", "--width", "20"], "no 20 MFLOPs row"),
        (["table3", "--data.root", "{root}", "--steps", "0"], "--steps must be >= 1"),
        (["table3", "--steps", "5"], "--data.root"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, cifar_root, capsys, argv, says):
    argv = [a.format(tmp=tmp_path, root=cifar_root) for a in argv] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not (tmp_path / "out" / "runs").exists()
