"""`lenetalex train` checkpoints: written atomically; on --resume loaded with
weights_only=True, so a file crafted to run code is refused without running
it, and a bad file (truncated, corrupt, foreign, another model or shape,
another format version) gets one error naming it, with nothing overwritten."""
import os

import pytest
import torch

from lenetalex import train


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
