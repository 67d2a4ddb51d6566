"""The CPU kernels' instruction-set variants (csrc/cpu/isa.h, csrc/cpu_isa.cpp):
every variant this machine runs gives the reference's results on every CPU path,
switching happens in one process without touching the dispatcher, and the
choice (LENETALEX_CPU_ISA, set_cpu_isa) follows the rule on CPUs we don't have
(the rule itself is tried on made-up CPU facts)."""
import os
import re
import subprocess
import sys

import pytest
import torch

import lenetalex
from lenetalex import _C, reference
from lenetalex.shapes import CONV
from conftest import assert_close
from test_conv2d_activation_paths import CASES as CONV_CASES
from test_conv2d_activation_paths import _check_against_reference, _tensors

NAMES = ["baseline", "avx2", "avx512"]
RUNNABLE = lenetalex.cpu_isas()
OPS = ["conv2d_activation", "conv2d_activation_backward", "avg_subsample", "avg_subsample_backward",
       "local_response_norm", "local_response_norm_backward", "rbf_distance", "rbf_distance_backward",
       "lenet5", "lenet5_backward"]


@pytest.fixture
def restore_isa():
    before = _C.cpu_isa()
    yield
    lenetalex.set_cpu_isa(before)


# ---- what the binary and this CPU offer --------------------------------------

def test_build_info_names_the_variant_in_use():
    info = lenetalex.build_info()
    assert info["cpu_isa"] in RUNNABLE
    assert "baseline" in info["cpu_isa_compiled"]
    assert set(info["cpu_isa_compiled"]) <= set(NAMES)
    if os.environ.get("LENETALEX_CPU_ISA", "auto") == "auto":
        assert info["cpu_isa"] == RUNNABLE[-1]  # the best this machine runs


def test_variants_agree_with_torchs_view_of_the_cpu():
    # torch's own capability check (ATen's CPU_CAPABILITY), unless it was lowered by hand
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip("ATEN_CPU_CAPABILITY set")
    supported = {name: s for name, _, s in _C.cpu_isa_variants()}
    cap = torch.backends.cpu.get_cpu_capability()
    if cap == "AVX512":
        assert supported["avx512"] and supported["avx2"]
    elif cap == "AVX2":
        assert supported["avx2"] and not supported["avx512"]


# ---- every runnable variant against the reference ------------------------------

@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_paths_match_reference(isa, case, restore_isa):
    lenetalex.set_cpu_isa(isa)
    _, xs, ws, stride, padding, groups = case
    activation = ["scaled_tanh", "tanh", "relu", "identity"][CONV_CASES.index(case) % 4]
    for dtype in (torch.float32, torch.float64):
        x, w, b = _tensors(xs, ws, dtype)
        _check_against_reference(x, w, b, stride, padding, groups, activation, dtype)


def _grads(fn, inputs, *args):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*inputs, *args)
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    return [y, *torch.autograd.grad(y, inputs, g)]


def _other_ops(dtype):
    """(name, fn, reference fn, inputs, extra args): LeNet's S2/S4 and F6, AlexNet's LRNs."""
    gen = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)
    return [
        ("avg_subsample_s2", lenetalex.avg_subsample, reference.avg_subsample,
         [r(17, 6, 28, 28), r(6), r(6)], (2, None, "scaled_tanh")),
        ("avg_subsample_odd", lenetalex.avg_subsample, reference.avg_subsample,
         [r(3, 5, 11, 9), r(5), r(5)], (3, 2, "relu")),
        ("lrn_alexnet", lenetalex.local_response_norm, reference.local_response_norm,
         [r(2, 96, 27, 27)], (5, 1e-4, 0.75, 2.0)),
        ("lrn_even_odd_beta", lenetalex.local_response_norm, reference.local_response_norm,
         [r(3, 7, 5, 3)], (4, 0.3, 0.6, 1.0)),
        ("rbf_lenet", lenetalex.rbf_distance, reference.rbf_distance, [r(37, 84), r(10, 84)], ()),
        ("rbf_wide", lenetalex.rbf_distance, reference.rbf_distance, [r(5, 131), r(19, 131)], ()),
    ]


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_other_ops_match_reference(isa, dtype, restore_isa):
    lenetalex.set_cpu_isa(isa)
    for name, fn, ref, inputs, args in _other_ops(dtype):
        got = _grads(fn, inputs, *args)
        want = _grads(ref, [t.double() for t in inputs], *args)
        for a, e in zip(got, want):
            assert a.dtype == dtype, name
            assert_close(a, e, dtype, 10.0)


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_lenet5_matches_reference(isa, dtype, restore_isa):
    # 9 images: one full 8-image block of lenet5_cpu.cpp's vectors and a ragged one
    from test_lenet5 import compare, images, twins
    lenetalex.set_cpu_isa(isa)
    ref, fused = twins(dtype)
    compare(fused, ref, images(9, dtype))


def test_variants_agree_with_each_other(restore_isa):
    x, w, b = _tensors(*CONV["lenet_c3"].shapes(17), torch.float32)
    outs = {}
    for isa in RUNNABLE:
        lenetalex.set_cpu_isa(isa)
        assert _C.cpu_isa() == isa
        outs[isa] = lenetalex.conv2d_activation(x, w, b).detach()
    for isa, y in outs.items():
        torch.testing.assert_close(y, outs[RUNNABLE[0]], rtol=1e-5, atol=1e-5, msg=isa)


def test_switching_registers_nothing(restore_isa):
    dumps = lambda: [torch._C._dispatch_dump(f"lenetalex::{op}") for op in OPS]
    before = dumps()
    # one CPU kernel per op (a line of its own: AutocastCPU's is another key)
    assert all(len(re.findall(r"^CPU:", d, re.M)) == 1 for d in before), before[0]
    for isa in RUNNABLE:
        lenetalex.set_cpu_isa(isa)
    assert dumps() == before


# ---- choosing a variant ----------------------------------------------------------

ALL = (True, True, True)


@pytest.mark.parametrize("compiled, supported, expected", [
    (ALL, (True, True, True), "avx512"),     # an AVX-512 machine
    (ALL, (True, True, False), "avx2"),      # AVX2 only (Zen 2/3, most desktops)
    (ALL, (True, False, False), "baseline"),
    ((True, False, False), ALL, "baseline"),  # a non-x86 build: the baseline alone
    ((True, True, False), ALL, "avx2"),      # built without avx512 (LENETALEX_CPU_ISAS)
])
def test_auto_takes_the_best_variant_that_runs(compiled, supported, expected):
    assert _C._choose_cpu_isa("auto", compiled, supported) == expected
    assert _C._choose_cpu_isa("", compiled, supported) == expected


def test_forcing_a_variant_the_cpu_lacks_raises():
    with pytest.raises(RuntimeError, match=r"LENETALEX_CPU_ISA=avx512: this CPU cannot run the "
                                           r"avx512 kernels \(they need AVX-512.*runs: baseline, avx2"):
        _C._choose_cpu_isa("avx512", ALL, (True, True, False))
    assert _C._choose_cpu_isa("baseline", ALL, ALL) == "baseline"
    assert _C._choose_cpu_isa("avx2", ALL, ALL) == "avx2"


def test_forcing_a_variant_not_built_raises():
    with pytest.raises(RuntimeError, match=r"has no avx2 kernels \(compiled: baseline\)"):
        _C._choose_cpu_isa("avx2", (True, False, False), ALL)


def test_no_runnable_variant_raises():
    with pytest.raises(RuntimeError, match="no CPU kernel variant runs on this CPU"):
        _C._choose_cpu_isa("auto", ALL, (False, False, False))


def test_unknown_name_raises_value_error():
    with pytest.raises(ValueError, match=r"LENETALEX_CPU_ISA=sse9: expected auto, baseline, avx2 or avx512"):
        _C._choose_cpu_isa("sse9", ALL, ALL)


def test_set_cpu_isa_refuses_and_keeps_the_variant(restore_isa):
    before = _C.cpu_isa()
    missing = [n for n in NAMES if n not in RUNNABLE]
    for name in missing:
        with pytest.raises(RuntimeError, match=f"cpu_isa={name}: "):
            lenetalex.set_cpu_isa(name)
        assert _C.cpu_isa() == before
    with pytest.raises(ValueError, match="cpu_isa=AVX2: expected"):
        lenetalex.set_cpu_isa("AVX2")
    with pytest.raises(TypeError, match="isa to be a str"):
        lenetalex.set_cpu_isa(2)
    assert lenetalex.set_cpu_isa("auto") == RUNNABLE[-1]


def _import_with(value):
    env = dict(os.environ, LENETALEX_CPU_ISA=value)
    code = "import lenetalex; print(lenetalex.build_info()['cpu_isa'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("isa", RUNNABLE)
def test_environment_variable_forces_a_variant(isa):
    r = _import_with(isa)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa


def test_environment_variable_errors_at_import():
    r = _import_with("avx1024")
    assert r.returncode != 0 and "ValueError: LENETALEX_CPU_ISA=avx1024: expected auto" in r.stderr
    missing = [n for n in NAMES if n not in RUNNABLE]
    if missing:  # e.g. avx512 on an AVX2-only machine
        r = _import_with(missing[-1])
        assert r.returncode != 0 and f"RuntimeError: LENETALEX_CPU_ISA={missing[-1]}:" in r.stderr
