"""Instructions per call of the fused ops and their references, counted by
valgrind's callgrind: stable on a loaded machine, where timings are not.

    python bench/callgrind_ops.py [--isa baseline,avx2] [--cases lrn1,s4,...] [--fwd-only]

For each bench case (lenetalex/bench/cases.py, one thread) and each CPU kernel
variant it runs this script under callgrind twice, with the op called once
and three times after a warm-up call, and prints half the difference: the
instructions of one call, without start-up, allocation of inputs or the
warm-up. Fewer instructions is not less time (vector width, memory stalls),
but a loop the compiler left scalar shows at once. Under valgrind only: the
child run (--child) does the calls.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

# short name -> (op, bench case name)
CASES = {
    "c1": ("conv2d_activation", "lenet_c1"), "c3": ("conv2d_activation", "lenet_c3"),
    "c5": ("conv2d_activation", "lenet_c5"), "conv1": ("conv2d_activation", "alexnet_conv1"),
    "conv3": ("conv2d_activation", "alexnet_conv3"),
    "s2": ("avg_subsample", "lenet_s2"), "s4": ("avg_subsample", "lenet_s4"),
    "lrn1": ("local_response_norm", "alexnet_lrn1"), "lrn2": ("local_response_norm", "alexnet_lrn2"),
    "head": ("rbf_distance", "lenet_head"),
}


def child(op, case_name, impl, direction, calls, batch):
    import torch

    import lenetalex
    from lenetalex import reference
    from lenetalex.bench import cases

    torch.set_num_threads(1)
    case = next(c for c in cases.op_cases(op, "cpu", batch) if c.name == case_name)
    fn = getattr(lenetalex if impl == "fused" else reference, op)
    inputs = case.make_inputs(torch.device("cpu"), torch.float32)
    if direction == "fwd":
        run = lambda: fn(*inputs, **case.kwargs)  # noqa: E731
    else:
        leaves = [t.requires_grad_(s.grad) for t, s in zip(inputs, case.tensors)]
        wanted = [t for t in leaves if t.requires_grad]

        def run():
            y = fn(*leaves, **case.kwargs)
            torch.autograd.grad(y, wanted, torch.ones_like(y))
    with torch.no_grad() if direction == "fwd" else torch.enable_grad():
        for _ in range(1 + calls):
            run()


def count(args, isa, key, impl, direction, calls):
    op, case_name = CASES[key]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, LENETALEX_CPU_ISA=isa, OMP_NUM_THREADS="1")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
               __file__, "--child", op, case_name, impl, direction, str(calls), str(args.batch or 0)]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        with open(out) as f:
            text = f.read()
    return int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        op, case_name, impl, direction, calls, batch = sys.argv[2:8]
        return child(op, case_name, impl, direction, int(calls), int(batch) or None)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--isa", default=None, help="comma-separated variants (default: all this machine runs)")
    p.add_argument("--cases", default="c3,s4,lrn1,head", help=f"comma-separated, of {','.join(CASES)}")
    p.add_argument("--fwd-only", action="store_true")
    p.add_argument("--batch", type=int, help="override the bench's batch size (smaller runs faster)")
    args = p.parse_args()
    import lenetalex

    isas = args.isa.split(",") if args.isa else lenetalex.cpu_isas()
    directions = ["fwd"] if args.fwd_only else ["fwd", "fwd+bwd"]
    print(f"{'case':8} {'dir':8} {'reference':>14} " + " ".join(f"{i:>14}" for i in isas)
          + "   (instructions per call, one thread)")
    for key in args.cases.split(","):
        for d in directions:
            per = lambda isa, impl: (count(args, isa, key, impl, d, 3) - count(args, isa, key, impl, d, 1)) // 2  # noqa: E731
            ref = per(isas[0], "reference")
            fused = [per(isa, "fused") for isa in isas]
            print(f"{key:8} {d:8} {ref:14,d} " + " ".join(f"{f:14,d}" for f in fused), flush=True)


if __name__ == "__main__":
    sys.exit(main())
