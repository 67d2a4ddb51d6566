"""`lenetalex train`: a short real run, resume == uninterrupted, DDP under
torchrun == one process, the AlexNet path, the command line's errors."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lenetalex import data as D
from lenetalex import train

from test_data import write_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(argv):
    """train.train on parsed argv; returns (model, history)."""
    return train.train(train.parse_args(argv))


def _params(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _tiny_lenet_args(root, *extra):
    return ["lenet5", "--data", str(root), "--batch-size", "16",
            "--momentum", "0.9", "--lr", "0.002", "--no-progress", "--threads", "1", *extra]


@pytest.mark.skipif(not os.path.isdir(D.DEFAULT_ROOT), reason="no Fashion-MNIST installed")
def test_lenet5_one_short_epoch_on_fashion_mnist(tmp_path):
    # The default implementation (fused) and the default schedule, on 12,000 images.
    model, history = _run(["lenet5", "--limit", "12000", "--test-limit", "2000", "--epochs", "1",
                           "--threads", "1", "--no-progress", "--json", str(tmp_path / "m.json")])
    (h,) = history
    assert h["test_accuracy"] > 0.65, h  # chance is 0.1; measured 0.77
    assert h["train_loss"] < 40 and h["images_per_second"] > 0
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["epochs"][0]["test_accuracy"] == h["test_accuracy"]
    assert saved["args"]["impl"] == "fused" and saved["world_size"] == 1


def test_resume_equals_uninterrupted(tmp_path):
    write_mnist(tmp_path / "data", n_train=64, n_test=16)
    full, cut = tmp_path / "full.pt", tmp_path / "cut.pt"
    _, h_full = _run(_tiny_lenet_args(tmp_path / "data", "--epochs", "2", "--checkpoint", str(full)))
    _, h_cut = _run(_tiny_lenet_args(tmp_path / "data", "--epochs", "1", "--checkpoint", str(cut)))
    assert len(h_cut) == 1 and torch.load(cut, weights_only=True)["epoch"] == 1
    _, h_resumed = _run(_tiny_lenet_args(tmp_path / "data", "--epochs", "2", "--checkpoint", str(cut),
                                         "--resume", "--json", str(tmp_path / "r.json")))
    a, b = _params(full), _params(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ckpt_a, ckpt_b = (torch.load(p, weights_only=True) for p in (full, cut))
    for sa, sb in zip(ckpt_a["optimizer"]["state"].values(), ckpt_b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    keys = ("epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
    assert [[e[k] for k in keys] for e in h_full] == [[e[k] for k in keys] for e in h_resumed]
    assert len(json.loads((tmp_path / "r.json").read_text())["epochs"]) == 2
    # Nothing but the checkpoint itself is left in the folder (written via a temporary file).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pt", "data", "full.pt", "r.json"]


def test_paper_schedule():
    args = train.resolve(train.parse_args(["lenet5", "--lr", "1.0"]))
    lrs = [train.lr_for_epoch(args, e, []) for e in range(22)]
    # eta of LeCun 1998 per pass, relative to passes 1-2 (5e-4).
    paper = [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 8
    assert lrs[:20] == pytest.approx([p / 5e-4 for p in paper]) and lrs[20:] == [0.02, 0.02]
    scaled = train.resolve(train.parse_args(["lenet5", "--batch-size", "64"]))
    assert scaled.lr == pytest.approx(2 * train.DEFAULTS["lenet5"]["lr"])
    alex = train.resolve(train.parse_args(["alexnet"]))
    assert (alex.lr, alex.momentum, alex.weight_decay, alex.batch_size) == (0.01, 0.9, 5e-4, 128)
    hist = [{"lr": 0.01, "test_error": 0.5}, {"lr": 0.01, "test_error": 0.4}]
    assert train.lr_for_epoch(alex, 2, hist) == 0.01
    hist.append({"lr": 0.01, "test_error": 0.45})
    assert train.lr_for_epoch(alex, 3, hist) == pytest.approx(0.001)


def test_alexnet_smoke(tmp_path, capsys):
    write_mnist(tmp_path / "data", n_train=4, n_test=2)
    out = tmp_path / "a.json"
    code = train.main(["alexnet", "--data", str(tmp_path / "data"), "--impl", "reference", "--epochs", "1",
                       "--threads", "1", "--batch-size", "2", "--eval-batch-size", "2", "--json", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "epoch 1/1: lr 0.01" in captured.out and "img/s" in captured.out
    assert "epoch 1/1" in captured.err and "2/2" in captured.err  # the progress bar (tqdm)
    (h,) = json.loads(out.read_text())["epochs"]
    assert h["train_loss"] == pytest.approx(h["train_loss"]) and 0 <= h["test_accuracy"] <= 1
    assert h["lr"] == 0.01


def test_plain_progress_without_tqdm(capsys):
    bar = train._PlainProgress(20, "epoch 1/1")
    bar.set_postfix(loss="0.5")
    for _ in range(20):
        bar.update()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[-1] == "epoch 1/1: 20/20 loss=0.5"


def test_cli_errors(tmp_path, capsys):
    assert train.main(["lenet5", "--resume"]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err
    assert train.main(["lenet5", "--data", str(tmp_path)]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    write_mnist(tmp_path, compress=False)
    with open(tmp_path / "train-images-idx3-ubyte", "r+b") as f:
        f.truncate(100)
    assert train.main(["lenet5", "--data", str(tmp_path), "--impl", "reference"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert train.main(["lenet5", "--dtype", "bfloat16", "--device", "cpu"]) == 2


def test_cli_has_train_subcommand():
    from lenetalex import cli

    args = cli.build_parser().parse_args(["train", "lenet5", "--epochs", "2", "--impl", "reference"])
    assert args.func is train.cmd_train and args.epochs == 2 and args.model == "lenet5"


def _torchrun():
    exe = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [exe] if os.path.exists(exe) else (shutil.which("torchrun") and ["torchrun"])


@pytest.mark.skipif(not _torchrun(), reason="no torchrun")
def test_torchrun_ddp_matches_one_process(tmp_path):
    write_mnist(tmp_path / "data", n_train=64, n_test=20)
    args = _tiny_lenet_args(tmp_path / "data", "--epochs", "2")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    r = subprocess.run(
        _torchrun() + ["--standalone", "--nproc_per_node=2", "-m", "lenetalex", "train", *args,
                       "--device", "cpu", "--checkpoint", str(tmp_path / "ddp.pt"),
                       "--json", str(tmp_path / "ddp.json")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # Each rank compared its parameters with rank 0's at the end.
    assert "parameters identical on all 2 ranks" in r.stdout
    # Only rank 0 prints: each epoch's line appears once.
    assert r.stdout.count("epoch 2/2:") == 1
    assert json.loads((tmp_path / "ddp.json").read_text())["world_size"] == 2
    single, _ = _run(args)
    ddp = _params(tmp_path / "ddp.pt")
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
