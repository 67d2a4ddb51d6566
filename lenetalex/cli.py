"""The `lenetalex` command (also `python -m lenetalex`): info, check, bench, train."""
import argparse
import importlib
import os
import platform
import sys


def cmd_info(args):
    import torch

    import lenetalex

    info = lenetalex.build_info()
    print(f"lenetalex {info['version']}")
    print(f"  torch            {info['torch']} (CUDA {torch.version.cuda})")
    print(f"  CUDA kernels     {'compiled' if info['cuda_compiled'] else 'not compiled'}"
          + (f" for {', '.join(info['cuda_arch_list'])}" if info["cuda_arch_list"] else ""))
    print(f"  OpenMP           {info['openmp']}")
    print(f"  CPU kernels      {info['cpu_isa']} (compiled: {', '.join(info['cpu_isa_compiled'])}; "
          f"this CPU runs: {', '.join(lenetalex.cpu_isas())}; LENETALEX_CPU_ISA chooses)")
    print(f"  CPU              {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"  cuda:{i}           {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
                  f"{p.multi_processor_count} SMs")
    else:
        print("  CUDA devices     none")
    return 0


def cmd_check(args):
    from . import check

    failures = check.run(op_filter=args.ops.split(",") if args.ops else None, device=args.device)
    return 1 if failures else 0


def build_parser():
    p = argparse.ArgumentParser(prog="lenetalex", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="build info, devices, threads").set_defaults(func=cmd_info)
    c = sub.add_parser("check", help="every op against its reference; non-zero exit on mismatch")
    c.add_argument("--ops", help="comma-separated op names (default: all)")
    c.add_argument("--device", choices=["cpu", "cuda", "emu"],
                   help="check one device (default: cpu, and cuda if there is a GPU); emu: the "
                        "CUDA kernels in the CUDA emulator (make test-emu builds it)")
    c.set_defaults(func=cmd_check)
    for extra in ("bench", "train"):
        try:
            mod = importlib.import_module(f"lenetalex.{extra}")
        except ImportError as exc:
            if exc.name == f"lenetalex.{extra}":  # not in this installation: no such subcommand
                continue
            # The module is there but broken: its subcommand reports why
            # (argparse would only say "invalid choice").
            _add_broken(sub, extra, exc)
            continue
        mod.add_parser(sub)
    return p


def _add_broken(sub, name, exc):
    def fail(args):
        print(f"lenetalex {name}: cannot run, importing lenetalex.{name} failed: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    c = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False)
    c.add_argument("rest", nargs=argparse.REMAINDER)
    c.set_defaults(func=fail)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
