"""`lenetalex bench`: the machinery on tiny shapes (batch 2, very short timings).
Checks the structure of the table and the JSON, ratio = reference / fused,
every op listed, and "not available" for what a build lacks. Never asserts a speed."""
import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

import lenetalex
from lenetalex import bench, reference
from lenetalex.bench import cases, measure, report
from lenetalex.cli import build_parser

FAST = dict(device="cpu", batch=2, quick=True, min_run_time=1e-4, progress=False)
OPS = ["conv2d_activation", "avg_subsample", "local_response_norm", "rbf_distance"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: on a loaded machine two threads wait on each other at every
    parallel region, and these tests time nothing that matters."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _device(rep, name="cpu"):
    return next(d for d in rep["devices"] if d["device"] == name)


@pytest.fixture(scope="module")
def all_ops_report():
    """Every op, with the references standing in for the fused ops (so all are
    "available" whatever this build holds) and no models module."""
    fused = types.SimpleNamespace(**{op: getattr(reference, op) for op in OPS})
    return bench.run(ops=OPS, fused=fused, **FAST)


def test_every_case_and_direction_is_reported(all_ops_report):
    dev = _device(all_ops_report)
    got = {(r["op"], r["case"], r["direction"]) for r in dev["results"]}
    want = {(op, c.name, d) for op in OPS for c in cases.op_cases(op, "cpu", 2) for d in cases.DIRECTIONS}
    assert got == want
    assert set(dev["summary"]) == set(OPS)


def test_ratio_is_reference_over_fused(all_ops_report):
    for r in _device(all_ops_report)["results"]:
        assert r["status"] == "ok", r
        assert r["reference_s"] > 0 and r["fused_s"] > 0
        assert r["speedup"] == pytest.approx(r["reference_s"] / r["fused_s"])
        assert r["compiled_s"] is None and r["speedup_vs_compiled"] is None


def test_throughput_and_limits(all_ops_report):
    dev = _device(all_ops_report)
    lim = dev["limits"]
    assert lim["copy_bytes_per_s"] > 0 and lim["matmul_flops_per_s"] > 0
    for r in dev["results"]:
        compute = r["op"] in ("conv2d_activation", "rbf_distance")
        assert r["bound"] == ("compute" if compute else "memory")
        assert r["throughput_unit"] == ("GFLOP/s" if compute else "GB/s")
        work = r["flops"] if compute else r["bytes"]
        limit = lim["compute_flops_per_s"] if compute else lim["copy_bytes_per_s"]
        assert r["fused_throughput"] == pytest.approx(work / r["fused_s"] / 1e9)
        assert r["fused_pct_of_limit"] == pytest.approx(100 * work / r["fused_s"] / limit)


def test_cpu_compute_limit_is_the_variants_peak_fma(all_ops_report):
    dev = _device(all_ops_report)
    lim = dev["limits"]
    assert lim["compute_limit"] == "peak FMA"
    assert lim["compute_flops_per_s"] == lim["peak_fma_flops_per_s"] > 0
    assert lim["matmul_flops_per_s"] > 0  # still measured, shown beside it
    assert dev["cpu_isa"] == lenetalex.build_info()["cpu_isa"] and dev["cores"] == os.cpu_count()
    text = report.render(all_ops_report)
    assert f"{dev['cpu_isa']} kernels, {os.cpu_count()} cores" in text
    assert "peak FMA float32" in text and "for comparison" in text


def test_isa_runs_the_suite_once_per_variant():
    before = lenetalex.build_info()["cpu_isa"]
    variants = lenetalex.cpu_isas()
    rep = bench.run(ops=["rbf"], isa="all", **FAST)
    cpus = [d for d in rep["devices"] if d["device"] == "cpu"]
    assert [d["cpu_isa"] for d in cpus] == variants == rep["settings"]["cpu_isas"]
    for d in cpus:
        assert d["limits"]["peak_fma_flops_per_s"] > 0
        assert all(r["status"] == "ok" for r in d["results"])
    assert lenetalex.build_info()["cpu_isa"] == before  # restored
    with pytest.raises(ValueError, match="not runnable here"):
        bench.run(ops=["rbf"], isa=["avx1024"], **FAST)


def test_isa_argument_and_results_name():
    p = build_parser()
    assert p.parse_args(["bench", "--isa"]).isa == "all"
    assert p.parse_args(["bench", "--isa", "baseline,avx2"]).isa == ["baseline", "avx2"]
    assert p.parse_args(["bench"]).isa is None
    with pytest.raises(SystemExit):
        p.parse_args(["bench", "--isa", "sse"])
    dev = {"device": "cpu", "device_name": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
           "cpu_isa": "avx512"}
    assert report.results_name(dev) == "cpu-intel-xeon-platinum-8375c-avx512"
    assert report.results_name({**dev, "device_name": "AMD EPYC 7B13", "cpu_isa": "avx2"}) == (
        "cpu-amd-epyc-7b13-avx2")


def test_work_counts():
    c1 = cases.op_cases("conv2d_activation", "cpu", 2)[0]  # (2,1,32,32)x(6,1,5,5)
    assert c1.flops("fwd") == 2 * 2 * 6 * 28 * 28 * 25
    assert c1.flops("fwd+bwd") == 3 * c1.flops("fwd")
    lrn = cases.op_cases("local_response_norm", "cpu", 2)[0]
    n = 2 * 96 * 55 * 55
    assert lrn.bytes("fwd", 4) == 2 * n * 4  # read x, write y
    assert lrn.bytes("fwd+bwd", 4) == 5 * n * 4  # + read grad_out and x, write grad_input
    rbf = cases.op_cases("rbf_distance", "cpu", None)[:-1]
    assert [(c.tensors[0].shape, c.out_shape) for c in rbf] == [((4096, 84), (4096, 10)), ((65536, 128), (65536, 1000))]
    assert [t.grad for t in rbf[0].tensors] == [True, False]  # prototypes fixed


def test_saved_bytes_for_backward(all_ops_report):
    x = torch.randn(1000, requires_grad=True)
    total, extra = measure.saved_bytes(torch.tanh, [x])  # tanh saves its output
    assert (total, extra) == (4000, 4000)
    total, extra = measure.saved_bytes(lambda t: t * t, [x])  # saves the input twice: nothing extra
    assert (total, extra) == (4000, 0)
    for r in _device(all_ops_report)["results"]:
        if r["direction"] == "fwd+bwd":
            assert r["saved_bytes_per_elem_reference"] == r["saved_bytes_per_elem_fused"] >= 0
        else:
            assert "saved_bytes_per_elem_fused" not in r


def test_not_available_is_reported_not_dropped(monkeypatch):
    fused = types.SimpleNamespace(conv2d_activation=None)  # no fused op
    monkeypatch.setitem(sys.modules, "lenetalex.models", types.ModuleType("lenetalex.models"))  # no model
    rep = bench.run(ops=["subsample", "lrn", "models"], fused=fused, **FAST)
    dev = _device(rep)
    ops = {r["op"] for r in dev["results"]}
    assert ops == {"avg_subsample", "local_response_norm", "models"}
    # shapes and the overhead case; 3 model rows: LeNet5, LeNet5-layers, AlexNet
    assert len(dev["results"]) == 2 * (4 + 3 + 3)
    for r in dev["results"]:
        assert r["status"] == "not available" and r["speedup"] is None
        assert r["fused_s"] is None and "not in this build" in r["note"]
    text = report.render(rep)
    assert "not available" in text and "avg_subsample" in text and "targets" in text
    t = {x["target"]: x for x in dev["targets"]}
    assert t["avg_subsample >= 3x on every shape (min)"]["status"] == "n/a"
    assert t["rbf_distance >= 1.5x on every shape (min)"]["detail"] == "not run"
    assert not bench.crashed(rep)


class _TinyNet(nn.Module):
    """Stands in for lenetalex.models.LeNet5: one conv through the op `impl` names."""

    def __init__(self, impl="fused", **kwargs):  # fused_net=False: the LeNet5-layers row
        super().__init__()
        self.fn = lenetalex.conv2d_activation if impl == "fused" else reference.conv2d_activation
        self.weight = nn.Parameter(torch.randn(10, 1, 32, 32) * 0.01)

    def forward(self, x):
        return self.fn(x, self.weight, None).flatten(1).square()


class _NeedsMissingOp(nn.Module):
    def __init__(self, impl="fused", variant="original"):
        super().__init__()
        if impl == "fused":
            raise AttributeError("module 'lenetalex' has no attribute 'local_response_norm'")
        self.lin = nn.Linear(3, 1000)

    def forward(self, x):
        return self.lin(x.mean((2, 3)))


def test_models(monkeypatch):
    fake = types.ModuleType("lenetalex.models")
    fake.LeNet5, fake.AlexNet = _TinyNet, _NeedsMissingOp
    monkeypatch.setitem(sys.modules, "lenetalex.models", fake)
    rep = bench.run(ops=["models"], **FAST)
    rows = {(r["case"], r["direction"]): r for r in _device(rep)["results"]}
    assert set(rows) == {(m, d) for m in ("LeNet5", "LeNet5-layers", "AlexNet") for d in cases.MODES}
    for mode in cases.MODES:
        r = rows[("LeNet5", mode)]
        assert r["status"] == "ok" and r["batch"] == 2
        assert rows[("LeNet5-layers", mode)]["status"] == "ok"
        assert r["speedup"] == pytest.approx(r["reference_s"] / r["fused_s"])
        assert r["fused_images_per_s"] == pytest.approx(2 / r["fused_s"])
        a = rows[("AlexNet", mode)]
        assert a["status"] == "not available" and "local_response_norm" in a["note"]
    t = {x["target"]: x for x in _device(rep)["targets"]}
    lenet = t["LeNet-5 training step >= 1.5x"]
    assert lenet["value"] == pytest.approx(rows[("LeNet5", "train step")]["speedup"])
    assert lenet["status"] in ("pass", "short")
    assert "--compile" in t["LeNet-5 training step: fused >= 1.0x compiled reference (--compile)"]["detail"]


def test_a_crash_is_an_error_row_and_a_nonzero_exit():
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    rep = bench.run(ops=["rbf"], fused=types.SimpleNamespace(rbf_distance=broken), **FAST)
    rows = _device(rep)["results"]
    assert all(r["status"] == "error" and "boom" in r["note"] for r in rows)
    assert bench.crashed(rep) and "ERROR" in report.render(rep)


def test_a_reference_without_a_kernel_is_not_available(monkeypatch):
    # e.g. torch.cdist's small-input CUDA kernel, which has no float16
    def no_kernel(*args, **kwargs):
        raise NotImplementedError('"cdist_cuda" not implemented for \'Half\'')

    monkeypatch.setattr(reference, "rbf_distance", no_kernel)
    fused = types.SimpleNamespace(rbf_distance=lenetalex.reference.rbf_distance_broadcast)
    rep = bench.run(ops=["rbf"], fused=fused, **FAST)
    rows = _device(rep)["results"]
    for r in rows:
        assert r["status"] == "not available" and r["note"].startswith("reference: NotImplementedError")
        assert r["reference_s"] is None and r["fused_s"] > 0 and r["speedup"] is None
    assert not bench.crashed(rep)
    assert "not available" not in report.render(rep).split("= rbf_distance =")[1].split("summary")[0]


def test_targets_pass_short_and_min():
    def row(case, direction, speedup):
        return {"op": "local_response_norm", "case": case, "direction": direction, "status": "ok",
                "speedup": speedup}

    results = [row("a", "fwd", 16.0), row("b", "fwd", 9.0), row("a", "fwd+bwd", 3.0), row("b", "fwd+bwd", 5.0)]
    t = {x["target"]: x for x in report.targets(results, compiled=False)}
    # every shape must reach the target: the worst one counts
    assert t["local_response_norm >= 8x fwd (min)"]["value"] == pytest.approx(9.0)
    assert t["local_response_norm >= 8x fwd (min)"]["status"] == "pass"
    assert t["local_response_norm >= 4x fwd+bwd (min)"]["value"] == pytest.approx(3.0)
    assert t["local_response_norm >= 4x fwd+bwd (min)"]["status"] == "short"
    results = [row("a", "fwd", 16.0), row("b", "fwd", 4.0), row("a", "fwd+bwd", 3.0), row("b", "fwd+bwd", 3.0)]
    assert report.geomean([2.0, 8.0]) == pytest.approx(4.0) and report.geomean([]) is None
    s = report.summarize(results)["local_response_norm"]
    assert s["geomean_speedup_fwd"] == pytest.approx(8.0) and s["min_speedup"] == 3.0


def test_overhead_case_per_op():
    # Every op ends with its call-overhead case: the smallest tensors, whatever --batch says.
    for op in OPS:
        for batch in (None, 64):
            last = cases.op_cases(op, "cpu", batch)[-1]
            assert last.name == cases.OVERHEAD
            assert max(t.numel for t in last.tensors) <= 64
    conv = cases.op_cases("conv2d_activation", "cpu")[-1]
    assert [t.shape for t in conv.tensors] == [(1, 1, 8, 8), (2, 1, 3, 3), (2,)]


def test_overhead_targets_take_every_op_and_only_that_case():
    def row(op, case, direction, speedup):
        return {"op": op, "case": case, "direction": direction, "status": "ok", "speedup": speedup}

    results = [row("conv2d_activation", "overhead", "fwd", 1.6), row("rbf_distance", "overhead", "fwd", 1.2),
               row("rbf_distance", "large", "fwd", 0.5), row("models", "overhead", "fwd", 0.1),
               row("local_response_norm", "overhead", "fwd+bwd", 2.0),
               row("local_response_norm", "alexnet_lrn1", "fwd", 20.0)]
    t = {x["target"]: x for x in report.targets(results, compiled=False)}
    fwd = t["call overhead: every op >= 1.5x fwd (min)"]
    assert (fwd["value"], fwd["status"], fwd["detail"]) == (1.2, "short", "at rbf_distance")
    assert t["call overhead: every op >= 1.5x fwd+bwd (min)"]["status"] == "pass"
    # The overhead case does not count for the op's own shape targets.
    assert t["rbf_distance >= 1.5x on every shape (min)"]["value"] == 0.5
    assert t["local_response_norm >= 8x fwd (min)"]["value"] == 20.0


def test_datasheet_names():
    assert measure.datasheet_key("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert measure.datasheet_key("NVIDIA H200") == "H200"
    assert measure.datasheet_key("NVIDIA H100 PCIe") is None
    assert measure.DATASHEETS["H200"]["bandwidth"] == 4.8e12


def test_bad_ops_argument_is_a_usage_error():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--ops", "conv,nope"])
    for bad in (["--batch", "0"], ["--rounds", "0"], ["--min-run-time", "-1"], ["--dtype", "int8"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", *bad])
    args = build_parser().parse_args(["bench", "--ops", "conv,local_response_norm"])
    assert args.ops == ["conv2d_activation", "local_response_norm"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda(capsys):
    args = build_parser().parse_args(["bench", "--device", "cuda"])
    assert args.func(args) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_cli_writes_json_markdown_and_says_about_plot(tmp_path):
    js, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    proc = subprocess.run(
        [sys.executable, "-m", "lenetalex", "bench", "--device", "all", "--ops", "subsample,rbf", "--batch", "2",
         "--quick", "--min-run-time", "0.0001", "--no-progress", "--json", str(js), "--markdown", str(md),
         "--plot", str(png)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "avg_subsample" in proc.stdout and "rbf_distance" in proc.stdout and "targets" in proc.stdout
    data = json.loads(js.read_text())
    env = data["environment"]
    for key in ("lenetalex", "git_commit", "torch", "cuda", "threads", "build"):
        assert key in env
    assert data["settings"]["dtype"] == "float32" and data["settings"]["quick"] is True
    cpu = _device(data)
    assert cpu["device_name"] and cpu["dtype"] == "float32" and cpu["limits"]["copy_bytes_per_s"] > 0
    assert {r["op"] for r in cpu["results"]} == {"avg_subsample", "rbf_distance"}
    for r in cpu["results"]:
        if r["status"] == "ok":
            assert math.isclose(r["speedup"], r["reference_s"] / r["fused_s"])
    if not torch.cuda.is_available():
        assert "not available" in _device(data, "cuda")["skipped"]
    assert "| case | shape | dir |" in md.read_text()
    try:
        import matplotlib  # noqa: F401
        assert png.exists() or "no speedups measured" in proc.stdout
    except ImportError:
        assert "needs matplotlib" in proc.stderr and not png.exists()


def test_a_dtype_the_device_does_not_run_is_reported_as_not_run():
    rep = bench.run(device="cpu", dtype="bfloat16", progress=False, quick=True)
    dev = _device(rep)
    assert "bfloat16" in dev["skipped"] and dev["results"] == []
    assert "not run" in report.render(rep)


def test_tf32_is_recorded_and_the_flags_restored(monkeypatch):
    """--tf32 lets the reference's cuDNN/matmuls use TF32 while timing (the matmul
    limit stays float32) and puts PyTorch's flags back afterwards."""
    seen = []
    real_limits = measure.measure_limits

    def limits(*args, **kwargs):
        seen.append(("limits", torch.backends.cuda.matmul.allow_tf32))
        return real_limits(*args, **kwargs)

    def ref(*args, **kwargs):
        seen.append(("case", torch.backends.cuda.matmul.allow_tf32))
        return reference.rbf_distance(*args, **kwargs)

    monkeypatch.setattr(measure, "measure_limits", limits)
    monkeypatch.setattr(reference, "rbf_distance", ref)
    before = torch.backends.cuda.matmul.allow_tf32  # a module proxy: monkeypatch can't undo it
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        rep = bench.run(ops=["rbf"], tf32=True, **FAST)
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert rep["settings"]["cuda_tf32"] is True
    assert "reference with TF32" in report.render(rep)
    assert ("limits", False) in seen and ("case", True) in seen and ("case", False) not in seen
