"""`lenetalex train` checkpoints: written atomically; on --resume loaded with
weights_only=True, so a file crafted to run code is refused without running
it, and a bad file (truncated, corrupt, foreign, another model or shape,
another format version) gets one error naming it, with nothing overwritten."""
import contextlib
import os
import pickle
import re
import shutil
import struct
import zipfile

import pytest
import torch

from lenetalex import data as D
from lenetalex import train

from test_data import write_mnist


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupt"])
def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "c.pt"
    train.save_checkpoint(path, {"epoch": 1, "w": torch.arange(1000.0)})
    good = path.read_bytes()

    def crash_mid_write(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        # The half-written bytes go elsewhere: the checkpoint is still whole.
        assert path.read_bytes() == good
        raise failure

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(type(failure)):
        train.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["c.pt"]  # the temporary file was removed
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1


class RunsCode:
    """Unpickling this calls exec, which writes `marker`: the shape of a
    malicious checkpoint. exec is a builtin, so the payload needs nothing
    importable from this test file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _args(data, *extra):
    return ["lenet5", "--data", str(data), "--batch-size", "16", "--epochs", "1",
            "--no-progress", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Data folders and real one-epoch checkpoints: the default LeNet-5, and
    one with --head linear on data with 12 classes (another output shape)."""
    root = tmp_path_factory.mktemp("made")
    write_mnist(root / "data10", n_train=64, n_test=16)
    tensors = write_mnist(root / "data12", n_train=64, n_test=16)
    labels = tensors["train"][1].clone()
    labels[0] = 11
    D.write_idx(root / "data12" / "train-labels-idx1-ubyte.gz", labels)
    train.train(train.parse_args(_args(root / "data10", "--checkpoint", str(root / "good.pt"))))
    train.train(train.parse_args(_args(root / "data12", "--head", "linear",
                                       "--checkpoint", str(root / "linear12.pt"))))
    return root


def _good(made):
    return torch.load(made / "good.pt", weights_only=True)


def _edited(**changes):
    def make(path, made):
        ckpt = _good(made)
        for key, value in changes.items():
            if value is None:
                del ckpt[key]
            else:
                ckpt[key] = value
        torch.save(ckpt, path)
    return make


def _code_in_checkpoint(path, made):
    ckpt = _good(made)
    ckpt["history"][0]["note"] = RunsCode(path.parent / "marker")
    torch.save(ckpt, path)


def _code_in_pickle(path, made):
    # Protocol 2: the oldest torch.load reads, so the loader gets as far as the global.
    with open(path, "wb") as f:
        pickle.dump({"model": RunsCode(path.parent / "marker")}, f, protocol=2)


def _truncated(path, made):
    data = (made / "good.pt").read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _damaged_tensor(path, made):
    # One float of the first tensor record overwritten: the pickle and the zip
    # structure stay valid, only the record's CRC-32 no longer matches.
    data = bytearray((made / "good.pt").read_bytes())
    with zipfile.ZipFile(made / "good.pt") as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    # The record's bytes follow its local header: 30 fixed bytes, then the name
    # and the extra field (torch's padding to align the data), lengths at 26.
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start:start + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))


CODE = "refused: unpickling it would call or build exec, which can run code"
BAD = {
    "code-in-checkpoint": (_code_in_checkpoint, (), CODE),
    "code-in-pickle": (_code_in_pickle, (), CODE),
    "truncated": (_truncated, (), r"not a readable PyTorch file \(truncated, corrupt or another "
                  r"format; RuntimeError: PytorchStreamReader failed reading zip archive"),
    "empty": (lambda path, made: path.write_bytes(b""), (), "the file is empty"),
    "text": (lambda path, made: path.write_text("epoch 3\n"), (), "not a readable PyTorch file"),
    "damaged-tensor": (_damaged_tensor, (), r"corrupt: record \S+/data/0 fails its CRC-32 check"),
    "tensor": (lambda path, made: torch.save(torch.zeros(3), path), (),
               r"not a lenetalex train checkpoint \(it holds a Tensor, not a dict\)"),
    "state-dict": (lambda path, made: torch.save(_good(made)["model"], path), (),
                   "not a lenetalex train checkpoint \\(no format 'lenetalex.train'"),
    "before-versions": (_edited(format=None, version=None), (), r"not a lenetalex train checkpoint "
                        r"\(no format 'lenetalex.train'; lenetalex before format version 1 wrote none\)"),
    "newer-version": (_edited(version=2), (), "format version 2; this lenetalex reads version 1"),
    "incomplete": (_edited(optimizer=None), (), "incomplete: no optimizer"),
    "other-model": (_edited(model_name="alexnet"), (), "holds model 'alexnet'; this run trains 'lenet5'"),
    "other-head": (lambda path, made: shutil.copy(made / "linear12.pt", path), (),
                   "written with --head linear, this run has --head rbf"),
    "other-classes": (lambda path, made: shutil.copy(made / "linear12.pt", path), ("--head", "linear"),
                      r"cannot load its parameters into this lenet5 \(size mismatch for "
                      r"output.weight: copying a param with shape torch.Size\(\[12, 84\]\)"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint_is_refused_and_kept(made, tmp_path, capsys, case):
    make, extra, message = BAD[case]
    path = tmp_path / "c.pt"
    make(path, made)
    before = path.read_bytes()
    capsys.readouterr()
    code = train.main(_args(made / "data10", "--checkpoint", str(path), "--resume",
                            "--json", str(tmp_path / "m.json"), *extra))
    out, err = capsys.readouterr()
    assert code == 2
    assert re.search(f"lenetalex train: error: checkpoint {re.escape(str(path))}: {message}", err), err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    # Nothing ran: no epoch, no code from the file, no file written or replaced.
    assert "epoch 1/1" not in out and "starting from scratch" not in out
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.pt"]  # no marker, no JSON, no temporary file


@pytest.mark.parametrize("make", [_code_in_checkpoint, _code_in_pickle], ids=["checkpoint", "pickle"])
def test_the_code_cases_do_run_code_when_unpickled_unsafely(made, tmp_path, make):
    # The refusal above means something only if these files are live.
    make(tmp_path / "c.pt", made)
    assert not (tmp_path / "marker").exists()
    with contextlib.suppress(Exception):  # the legacy loader fails after running it
        torch.load(tmp_path / "c.pt", weights_only=False)
    assert (tmp_path / "marker").read_text() == "ran"


def test_damaged_tensor_loads_unchecked_without_the_crc_check(made, tmp_path):
    # torch.load alone takes the damaged file: why load_checkpoint checks the CRCs.
    _damaged_tensor(tmp_path / "c.pt", made)
    damaged = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    good = _good(made)["model"]
    differ = [k for k in good if not torch.equal(good[k], damaged[k])]
    assert len(differ) == 1


def test_checkpoint_holds_only_safe_types_and_a_version(made):
    ckpt = train.load_checkpoint(made / "good.pt")
    assert (ckpt["format"], ckpt["version"]) == ("lenetalex.train", train.CHECKPOINT_VERSION)
    assert ckpt["model_name"] == "lenet5" and ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor)
