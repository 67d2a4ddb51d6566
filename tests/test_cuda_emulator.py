"""The CUDA emulator itself (lenetalex._emu, csrc/cuda_emu): each checker
catches its planted bug (csrc/cuda_emu/planted_bugs.cpp), errors reach Python
as exceptions and leave the emulator usable, the emulated ops check their
arguments as the CUDA ops do, and schedules change the order threads run in
but not the results of our kernels. The CUDA test files run our kernels on
the emulator through conftest.py; this file skips where it is not built."""
import os
import subprocess
import sys

import pytest
import torch

from lenetalex import emu, reference

pytestmark = [
    pytest.mark.emulator,
    pytest.mark.skipif(not emu.available(), reason="CUDA emulator not built (make test-emu)"),
]

X = torch.arange(64, dtype=torch.float32) + 1  # distinct, nonzero values


def planted(bug, x=X, schedule="forward"):
    with emu.schedule(schedule, 7):
        return torch.ops.lenetalex_emu.planted_bug(bug, x)


# --- the planted bugs ------------------------------------------------------


def test_correct_kernel_runs_under_every_schedule():
    want = X.roll(-1)
    for schedule in emu.SCHEDULES:
        assert torch.equal(planted("correct", schedule=schedule), want)


def test_missing_barrier_differs_between_schedules():
    with pytest.raises(RuntimeError, match=r"planted_bug gave different bits under schedule 'forward' and 'reverse'"):
        emu.run("planted_bug", "missing_barrier", X)
    # The forward order reads the neighbours' slots before they are written:
    # the arena's fill (NaN) shows where.
    assert torch.isnan(planted("missing_barrier")[:-1]).all()


def test_unwritten_shared_tile_reads_nan():
    y = planted("unwritten_tile")
    assert torch.isnan(y).all()
    assert y.view(torch.int32).eq(-1).all()  # the 0xFF bytes themselves


# (planted bug, what its checker must report): the kernel's source line, the
# threads involved, and for launch checks the numbers.
CHECKER_CASES = [
    ("divergent_barrier", r"divergent __syncthreads: threads 0-31 at .*planted_bugs.cpp:\d+ "
                          r"\(.*divergent_barrier_kernel.*\), threads 32-63 at .*planted_bugs.cpp:\d+"),
    ("barrier_after_exit", r"__syncthreads at .*planted_bugs.cpp:\d+ .*reached by threads 1-63 "
                           r"after thread 0 exited"),
    ("divergent_shuffle", r"divergent warp operation: threads 0-15 at .*planted_bugs.cpp:\d+.* "
                          r"but threads 16-31 at .*planted_bugs.cpp:\d+"),
    ("shuffle_exited_lane", r"shuffle at .*planted_bugs.cpp:\d+.* with mask 0xffffffff names lanes "
                            r"that have exited: thread 31"),
    ("shuffle_absent_lane", r"mask 0xffffffff: its threads 16-31 do not exist \(the block has 16 threads\)"),
    ("deadlock", r"deadlock: threads 0-15, 32-47 wait in a warp operation .* while "
                 r"threads 16-31, 48-63 wait at __syncthreads"),
    ("too_much_shared", r"__shared__ b at .*planted_bugs.cpp:\d+ .* 65536 bytes of shared memory, past the 48 KiB"),
    ("dynamic_shared_over_limit", r"65536 bytes of dynamic shared memory exceed the 48 KiB"),
    ("over_launch_bounds", r"block \(64, 1, 1\) has 64 threads, more than the kernel's __launch_bounds__\(32\)"),
    ("block_too_large", r"block \(2048, 1, 1\) exceeds CUDA's limits"),
    ("grid_too_large", r"grid \(1, 65536, 1\) exceeds CUDA's limits"),
]


@pytest.mark.parametrize("bug,message", CHECKER_CASES, ids=[c[0] for c in CHECKER_CASES])
def test_checker_catches_planted_bug(bug, message):
    with pytest.raises(RuntimeError, match=message):
        planted(bug)


def test_errors_name_the_launch_site_and_leave_the_emulator_usable():
    with pytest.raises(RuntimeError, match=r"kernel launched at .*planted_bugs.cpp:\d+ \(grid \(1, 1, 1\), block \(64, 1, 1\)\)"):
        planted("divergent_barrier")
    assert torch.equal(planted("correct"), X.roll(-1))


ASAN_SCRIPT = """
import torch, lenetalex.emu
lenetalex.emu.load()
torch.ops.lenetalex_emu.planted_bug("{bug}", torch.arange(64, dtype=torch.float32))
print("no report")
"""


@pytest.mark.skipif(not emu.available() or not emu.asan(), reason="needs the ASan build (make test-emu-asan)")
@pytest.mark.parametrize("bug,report", [
    ("global_overrun", "heap-buffer-overflow"),
    ("shared_overrun", "use-after-poison"),
])
def test_out_of_bounds_under_asan(bug, report):
    # AddressSanitizer ends the process at its first report: run it apart.
    r = subprocess.run([sys.executable, "-c", ASAN_SCRIPT.format(bug=bug)], capture_output=True, text=True,
                       env=dict(os.environ), timeout=120)
    assert r.returncode != 0 and report in r.stderr, r.stdout + r.stderr[-3000:]
    assert "planted_bugs.cpp" in r.stderr


# --- our kernels ---------------------------------------------------------------


def test_schedules_change_the_order_not_the_results():
    """The split-K conv backward and avg_subsample's block sums under all three
    schedules: bit-identical (emu.run raises otherwise)."""
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(4, 6, 14, 14, generator=g), torch.randn(16, 6, 5, 5, generator=g), torch.randn(16, generator=g)
    y = emu.run("conv2d_activation", x, w, b, [1, 1], [0, 0], 1, "scaled_tanh")
    emu.run("conv2d_activation_backward", torch.randn_like(y), y, x, w, [1, 1], [0, 0], 1, "scaled_tanh", [True] * 3)
    x, s, t = torch.randn(8, 6, 28, 28, generator=g), torch.randn(6, generator=g), torch.randn(6, generator=g)
    y = emu.run("avg_subsample", x, s, t, [2, 2], [2, 2], "tanh")
    gx, gw, gb = emu.run("avg_subsample_backward", torch.randn_like(y), y, x, s, [2, 2], [2, 2], "tanh", [True] * 3)
    assert torch.isfinite(gw).all() and torch.isfinite(gb).all()


def test_emulated_ops_check_arguments_as_cuda_does():
    ops = torch.ops.lenetalex_emu
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(TypeError, match=r"on cuda input must be float32, float16, bfloat16 or float64, got Float8"):
        ops.local_response_norm(x.to(torch.float8_e4m3fn), 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match=r"rbf_distance: expected input to be 2-D"):
        ops.rbf_distance(x, torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"expected weight of length 3"):
        ops.avg_subsample(x, torch.randn(4), torch.randn(3), [2, 2], [2, 2], "tanh")
    with pytest.raises(ValueError, match=r"activation must be one of"):
        ops.conv2d_activation(x, torch.randn(4, 3, 3, 3), None, [1, 1], [0, 0], 1, "gelu")
    # The CUDA dtypes run: float16 here, where the CPU op refuses it.
    y = ops.rbf_distance(torch.randn(4, 5).half(), torch.randn(3, 5).half())
    assert y.dtype == torch.float16 and y.shape == (4, 3)
    with pytest.raises(TypeError, match=r"on the CPU input must be float32 or float64"):
        torch.ops.lenetalex.rbf_distance(torch.randn(4, 5).half(), torch.randn(3, 5).half())


def test_emulated_schema_matches():
    for op in emu.OPS:
        a = getattr(torch.ops.lenetalex, op).default._schema
        b = getattr(torch.ops.lenetalex_emu, op).default._schema
        assert str(a).replace("lenetalex::", "") == str(b).replace("lenetalex_emu::", "")


def test_routed_entry_points_run_the_cuda_kernels():
    x, w = torch.randn(5, 7, dtype=torch.float16), torch.randn(3, 7, dtype=torch.float16)
    with emu.routed():
        import lenetalex

        y = lenetalex.rbf_distance(x, w)  # float16 on CPU tensors: only the CUDA code takes it
    want = reference.rbf_distance(x.double(), w.double())
    assert y.dtype == torch.float16 and (y.double() - want).abs().max() <= 2e-3 * want.abs().max()
    with pytest.raises(TypeError, match="on the CPU"):
        torch.ops.lenetalex.rbf_distance(x, w)  # the CPU kernel is back


def test_cli_check_device_emu():
    ops = "avg_subsample,local_response_norm"  # LRN's references need float64 on the CPU
    r = subprocess.run([sys.executable, "-m", "lenetalex", "check", "--device", "emu", "--ops", ops],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "emu" in r.stdout and "FAIL" not in r.stdout and "bfloat16" in r.stdout
