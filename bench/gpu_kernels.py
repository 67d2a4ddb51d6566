"""Calls every CUDA kernel of lenetalex once, forward and backward, on small
shapes: the program `make gpu-check` runs under compute-sanitizer (memcheck,
racecheck, synccheck), where every launch costs seconds, so nothing is timed
and nothing is large. Each case is also compared with lenetalex.reference, so a
kernel that the sanitizer passes but that computes garbage still fails here.

    python3 bench/gpu_kernels.py [--dtypes float32,bfloat16] [--device cuda|cpu]

(--device cpu runs the same cases on the CPU kernels: a dry run of this script.)

Exit 0: every kernel ran and matched; 1: a mismatch; 2: no CUDA device.
Which kernels a case reaches (see the file comments of csrc/cuda/*.cu):
  conv2d_activation  unforced ("cudnn" case): cuDNN + our bias/activation
                     epilogue forward, our gpre + grad_bias pass + cuDNN
                     backward. Forced with LENETALEX_CONV_CUDA_KERNEL (our
                     kernels, both directions): direct forward (LeNet C1),
                     implicit GEMM (SIMT in float32/float64, tensor cores in
                     float16/bfloat16) forward, and in the backward
                     grad_input and grad_weight on 256x16 (C1, C3), 128x32
                     (C5 grad_input) and 64x64 SIMT tiles or 64x16/32/64
                     tensor-core tiles, split-K with its sum for both (C5's
                     grad_input: K = 3000), grad_bias's two passes
  avg_subsample      2x2/2 and general forward; backward with and without
                     grad_input (the two loops) and the finish kernel
  local_response_norm  fixed-window kernels (size 3 or 5) with vector loads
                     (L % 4 == 0) and without; the general kernels (other
                     sizes): forward; backward with its ring in shared
                     memory and, for a window too wide for it, in global memory
  rbf_distance       forward; grad kernel and its slice sum
  lenet5             the whole network: forward (5 images: a full group and a
                     padded one), backward with every grad and the reduction
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lenetalex  # noqa: E402
from lenetalex import reference  # noqa: E402
from lenetalex.models.lenet import C3_TABLE  # noqa: E402
from lenetalex.ops.lenet5 import reference_lenet5  # noqa: E402
from lenetalex.shapes import CONV, LENET5_INPUT, LENET5_PARAMETERS, RBF_HEAD, SUBSAMPLE, with_batch  # noqa: E402
from lenetalex.tolerance import LOOSE_FACTOR, TOLERANCE, max_error  # noqa: E402

# Normalized error allowed per dtype: the reference runs in the op's dtype
# here, not in float64, so its roundings count too (lenetalex.tolerance).
TOL = {dtype: TOLERANCE[dtype] * LOOSE_FACTOR[dtype] for dtype in TOLERANCE}


def _cases():
    """(name, fused, reference, input shapes, env) for every kernel path."""
    conv = lambda **kw: (lambda x, w, b: lenetalex.conv2d_activation(x, w, b, **kw),  # noqa: E731
                         lambda x, w, b: reference.conv2d_activation(x, w, b, **kw))
    sub = lambda **kw: (lambda x, w, b: lenetalex.avg_subsample(x, w, b, **kw),  # noqa: E731
                        lambda x, w, b: reference.avg_subsample(x, w, b, **kw))
    lrn = lambda size: (lambda x: lenetalex.local_response_norm(x, size, 1e-4, 0.75, 2.0),  # noqa: E731
                        lambda x: reference.local_response_norm(x, size, 1e-4, 0.75, 2.0))
    lenet_conv = lambda name: [*CONV[name].shapes(4), CONV[name].weight[:1]]  # noqa: E731
    return [
        ("conv direct lenet_c1", *conv(), lenet_conv("lenet_c1"), "direct"),
        ("conv gemm lenet_c3", *conv(), lenet_conv("lenet_c3"), "gemm"),
        ("conv gemm lenet_c5", *conv(), lenet_conv("lenet_c5"), "gemm"),
        # Per group M = 4 * 34 * 34 >= 4096, ocg 64, K 288: cuDNN + epilogue, prologue + cuDNN.
        ("conv cudnn + epilogue", *conv(padding=1, activation="relu"),
         [(4, 32, 34, 34), (64, 32, 3, 3), (64,)], None),
        ("conv gemm grouped strided relu", *conv(stride=2, padding=1, groups=2, activation="relu"),
         [(2, 8, 15, 13), (12, 4, 3, 3), (12,)], "gemm"),
        ("avg_subsample 2x2", *sub(), [with_batch(SUBSAMPLE["lenet_s2"], 4), (6,), (6,)], None),
        ("avg_subsample k3 s2", *sub(kernel_size=3, stride=2, activation="tanh"),
         [(3, 5, 11, 9), (5,), (5,)], None),
        ("lrn size 5 (fixed window)", *lrn(5), [(2, 16, 7, 9)], None),
        ("lrn size 3 (fixed window, vec4)", *lrn(3), [(2, 70, 4, 8)], None),
        ("lrn size 4 (shared ring)", *lrn(4), [(2, 16, 7, 9)], None),
        ("lrn size 301 (global ring)", *lrn(301), [(1, 320, 3, 3)], None),
        ("rbf lenet head", lenetalex.rbf_distance, reference.rbf_distance, [(33, RBF_HEAD[1]), RBF_HEAD], None),
        ("lenet5 whole network", lambda *t: lenetalex.lenet5(*t, C3_TABLE.to(t[0].device)),
         lambda *t: reference_lenet5(*t, C3_TABLE.to(t[0].device)),
         [with_batch(LENET5_INPUT, 5), *LENET5_PARAMETERS.values(), RBF_HEAD], None),
    ]


def run_case(name, fused, ref, shapes, kernel, dtype, device):
    g = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(s, generator=g, dtype=torch.float64) * 0.5).to(device, dtype) for s in shapes]
    if kernel:
        os.environ["LENETALEX_CONV_CUDA_KERNEL"] = kernel
    try:
        errs = []
        for fn_ in (fused, ref):
            leaves = [t.clone().requires_grad_(True) for t in inputs]
            out = fn_(*leaves)
            gout = torch.ones_like(out)
            # rbf: the prototypes are fixed in LeNet, but their grad runs a kernel too.
            grads = torch.autograd.grad(out, leaves, gout)
            errs.append((out, grads))
        if device == "cuda":
            torch.cuda.synchronize()
    finally:
        os.environ.pop("LENETALEX_CONV_CUDA_KERNEL", None)
    (fo, fg), (ro, rg) = errs
    err = max([max_error(fo, ro)] + [max_error(a, b) for a, b in zip(fg, rg)])
    ok = err <= TOL[dtype]
    print(f"{'ok  ' if ok else 'FAIL'} {name:32s} {str(dtype)[6:]:9s} max normalized error {err:.2e}",
          flush=True)
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="comma-separated: float32, float16, bfloat16, float64 (default float32,bfloat16)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_kernels: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    if args.device == "cuda" and not lenetalex.build_info()["cuda_compiled"]:
        print("gpu_kernels: lenetalex was built without CUDA kernels", file=sys.stderr)
        return 1
    dtypes = [getattr(torch, d.strip()) for d in args.dtypes.split(",") if d.strip()]
    if args.device == "cpu":
        # The CPU kernels take float32 and float64 only (the ops say so and
        # raise): a dry run leaves the half types to the GPU.
        half = [d for d in dtypes if d not in (torch.float32, torch.float64)]
        if half:
            print(f"gpu_kernels: --device cpu skips {', '.join(str(d) for d in half)} "
                  f"(the CPU kernels take float32 and float64)")
        dtypes = [d for d in dtypes if d in (torch.float32, torch.float64)]
    ok = all([run_case(*case, dtype, args.device) for dtype in dtypes for case in _cases()])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
