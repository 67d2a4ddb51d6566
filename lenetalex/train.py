"""`lenetalex train {lenet5,alexnet}`: train either network on MNIST-format data.

    lenetalex train lenet5 --epochs 10                  # Fashion-MNIST by default
    torchrun --nproc_per_node=2 -m lenetalex train lenet5 ...   # DDP

LeNet-5 follows the paper: 32x32 input with background -0.1 and foreground
1.175, the RBF output with fixed prototypes, the MAP loss (with the op's
default j, lenetalex.reference.DEFAULT_MAP_J), SGD with the paper's per-pass
learning-rate schedule.
The paper updates after every image with a per-parameter step
eta/(mu + h_kk) (stochastic diagonal Levenberg-Marquardt); we use plain
minibatch SGD and keep the shape of its schedule: the learning rate of pass
e is lr * PAPER_LENET_FACTORS[e] (eta_e / eta_1: 1, 1, .4, .4, .4, .2, .2,
.2, .1, .1, .1, .1, then .02). The default lr, 0.01 at batch 32, was tuned
on Fashion-MNIST (0.02 diverges in the first epoch: the MAP loss sums 84
squared errors, and C5's and F6's gradients start ~25x and ~5x the size of
their weights); it is scaled linearly with --batch-size when --lr is not
given (the loss is the mean over the batch). --momentum 0.9 with a 3-10x
smaller lr is the usual alternative.

AlexNet: images resized to the variant's input size (227 or 224),
standardized; SGD with momentum 0.9 and weight decay 5e-4; lr 0.01, divided
by 10 (at most 3 times) after an epoch whose test error did not improve (the
paper did this on a validation set). On the CPU only a smoke run with
--limit is practical.

Each epoch ends with the test loss, accuracy and error and the training
images per second; --json writes them per epoch. --checkpoint writes a
checkpoint after every epoch (to a temporary file, fsynced, then os.replace),
and --resume continues from it: the data order is a function of (seed, epoch),
as with DistributedSampler, and the RNG states are saved, so a resumed run
ends with the same parameters as an uninterrupted one (on the CPU, in
deterministic mode). --resume loads the file with torch.load(weights_only=True),
so a file that would run code when unpickled is refused; one that is
truncated, corrupt (zip CRCs), not ours, of another format version, another
model or other shapes stops the run with an error naming the file and the
problem, before anything is trained or written. A missing file starts the run
from scratch.

Under torchrun (WORLD_SIZE > 1) the run uses DistributedDataParallel (gloo on
the CPU, nccl on CUDA); every rank trains on its DistributedSampler shard with
batch_size / world_size images per step, so the global batch is --batch-size
and the updates match a single-process run; only rank 0 prints, writes JSON
and checkpoints.
"""
import argparse
import gc
import json
import math
import os
import re
import sys
import time
import zipfile

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from . import data as D
from .reference import DEFAULT_MAP_J

MODELS = ("lenet5", "alexnet")
PAPER_LENET_FACTORS = (1, 1, .4, .4, .4, .2, .2, .2, .1, .1, .1, .1) + (.02,) * 8
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "bfloat16": torch.bfloat16, "float16": torch.float16}

# Per-model defaults, used where the command line leaves an option unset.
DEFAULTS = {
    "lenet5": dict(batch_size=32, lr=0.01, momentum=0.0, weight_decay=0.0, eval_batch_size=1000),
    "alexnet": dict(batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, eval_batch_size=64),
}


def add_arguments(p):
    p.add_argument("model", choices=MODELS)
    p.add_argument("--data", default=D.DEFAULT_ROOT,
                   help="folder of MNIST-format IDX files (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, help="global batch (lenet5 32, alexnet 128)")
    p.add_argument("--lr", type=float, help="peak learning rate (lenet5 0.01 at batch 32, scaled "
                   "linearly with --batch-size; alexnet 0.01)")
    p.add_argument("--schedule", choices=("paper", "constant"), default="paper",
                   help="paper: LeNet's per-pass factors / AlexNet's divide-by-10 on plateau")
    p.add_argument("--warmup", type=int, help="steps of linear learning-rate warmup at the start "
                   "(default 0)")
    p.add_argument("--momentum", type=float, help="lenet5 0 (the paper's plain SGD), alexnet 0.9")
    p.add_argument("--weight-decay", type=float, help="lenet5 0, alexnet 5e-4")
    p.add_argument("--map-j", type=float, default=DEFAULT_MAP_J,
                   help="j of LeNet-5's MAP loss (default: %(default)s, the op's; why: "
                   "help(lenetalex.lenet_map_loss))")
    p.add_argument("--head", choices=("rbf", "linear"), default="rbf",
                   help="lenet5 output: RBF + MAP loss, or linear + cross-entropy")
    p.add_argument("--variant", choices=("original", "torchvision"), default="original",
                   help="alexnet variant")
    p.add_argument("--init", choices=("paper", "default"),
                   help="paper: LeCun's uniform +-2.4/F (lenet5), N(0, 0.01^2) with biases 0/1 "
                   "(alexnet); default: PyTorch's (default: the model's own: paper, except for "
                   "alexnet --variant torchvision)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--impl", choices=("fused", "reference"), default="fused")
    p.add_argument("--layers", action="store_true", help="lenet5 --impl fused: run layer by "
                   "layer (the per-layer fused ops), not as the whole-network op lenetalex.lenet5")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="float16/bfloat16 on CUDA only")
    p.add_argument("--compile", action="store_true", help="train through torch.compile(model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads); on a loaded "
                   "machine 1 can be much faster than more")
    p.add_argument("--checkpoint", help="checkpoint file, written after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--limit", type=int, help="use the first N training images (and test images)")
    p.add_argument("--test-limit", type=int, help="use the first N test images (default: --limit)")
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--json", help="write per-epoch metrics to this file")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no per-batch progress bar")
    p.add_argument("--dist-url", default="env://", help=argparse.SUPPRESS)
    return p


def add_parser(subparsers):
    p = subparsers.add_parser("train", help="train LeNet-5 or AlexNet on MNIST-format data",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_train)
    return p


def parse_args(argv):
    return add_arguments(argparse.ArgumentParser(prog="lenetalex train")).parse_args(argv)


def resolve(args):
    """Fills the per-model defaults into args (in place) and returns it."""
    d = DEFAULTS[args.model]
    if args.lr is None:
        args.lr = d["lr"] * ((args.batch_size or d["batch_size"]) / d["batch_size"]
                             if args.model == "lenet5" else 1.0)
    for key in ("batch_size", "momentum", "weight_decay", "eval_batch_size"):
        if getattr(args, key) is None:
            setattr(args, key, d[key])
    if args.test_limit is None:
        args.test_limit = args.limit
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and args.dtype in ("float16", "bfloat16"):
        raise ValueError(f"--dtype {args.dtype} needs --device cuda (the CPU ops take float32/float64)")
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint PATH")
    return args


# ---------------------------------------------------------------- distributed

class Dist:
    """rank, world size and the process group, from torchrun's environment."""

    def __init__(self, args):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = self.enabled and not dist.is_initialized()
        if self.owns_group:
            backend = "nccl" if args.device == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=args.dist_url, rank=self.rank,
                                    world_size=self.world)
        if self.enabled and args.device == "cpu":
            # The ranks share the cores: do not oversubscribe them.
            local = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))

    @property
    def main(self):
        return self.rank == 0

    def sum(self, values, device):
        """Sums a list of floats over the ranks."""
        t = torch.tensor(values, dtype=torch.float64, device=device)
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()

    def check_replicas(self, module):
        """Raises unless every rank holds the same parameters as rank 0 (DDP
        should keep them so; this makes sure)."""
        if not self.enabled:
            return
        flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, 0)
        differ = torch.tensor([0.0 if torch.equal(flat, ref) else 1.0], device=flat.device)
        dist.all_reduce(differ)
        if differ.item():
            raise RuntimeError(f"DDP: the parameters differ between ranks ({int(differ.item())} of {self.world})")

    def close(self):
        if self.owns_group and dist.is_initialized():
            # Seen once under torch 2.13 (gloo): a rank aborted at exit with
            # "terminate called without an active exception" after training
            # had finished. Wait for every rank, and free the DDP wrapper (its
            # reducer keeps the gloo group and its worker threads alive, and
            # may sit in a reference cycle) before the group goes, so that no
            # gloo thread outlives the group or meets interpreter teardown.
            dist.barrier()
            gc.collect()
            dist.destroy_process_group()


# ---------------------------------------------------------------------- setup

def build(args, device, dtype):
    """(model, input transform, train set, test set); the sets are (x, y) with
    x preprocessed for LeNet-5, still uint8 for AlexNet (resized per batch)."""
    from .models import AlexNet, LeNet5

    train = D.load_mnist(args.data, "train")
    test = D.load_mnist(args.data, "test")
    if args.limit is not None:
        train = (train[0][:args.limit], train[1][:args.limit])
    if args.test_limit is not None:
        test = (test[0][:args.test_limit], test[1][:args.test_limit])
    # 10 unless the labels say more (a --limit slice may miss some classes).
    num_classes = max(10, int(max(train[1].max(), test[1].max())) + 1)
    if args.model == "lenet5":
        model = LeNet5(num_classes=num_classes, head=args.head, impl=args.impl,
                       init="default" if args.init == "default" else "lecun",
                       fused_net=not getattr(args, "layers", False))
        train = (D.lenet_transform(train[0], dtype=dtype), train[1])
        test = (D.lenet_transform(test[0], dtype=dtype), test[1])
        transform = None
    else:
        model = AlexNet(num_classes=num_classes, variant=args.variant, in_channels=1, impl=args.impl,
                        init=args.init)
        pixels = train[0].to(torch.float64) / 255.0
        mean, std = pixels.mean().item(), pixels.std().item()
        size = model.input_size

        def transform(images):
            return D.resize_transform(images, size, mean, std, dtype=dtype)
    return model.to(device=device, dtype=dtype), transform, train, test


def lr_for_epoch(args, epoch, history):
    """The learning rate of epoch `epoch` (0-based), from the schedule and,
    for AlexNet's plateau rule, the test errors so far."""
    if args.schedule == "constant":
        return args.lr
    if args.model == "lenet5":
        return args.lr * PAPER_LENET_FACTORS[min(epoch, len(PAPER_LENET_FACTORS) - 1)]
    lr = args.lr if not history else history[-1]["lr"]
    errors = [h["test_error"] for h in history]
    reductions = sum(1 for h in history if h.get("lr_reduced"))
    if len(errors) >= 2 and errors[-1] >= min(errors[:-1]) and reductions < 3:
        return lr / 10
    return lr


def _progress(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)


class _PlainProgress:
    """tqdm's calls, printed as a line every tenth of the epoch."""

    def __init__(self, total, desc):
        self.total, self.desc, self.n, self.postfix = total, desc, 0, ""

    def set_postfix(self, **kw):
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def update(self, n=1):
        step = max(1, self.total // 10)
        for _ in range(n):
            self.n += 1
            if self.n % step == 0 or self.n == self.total:
                print(f"{self.desc}: {self.n}/{self.total} {self.postfix}", flush=True)

    def close(self):
        pass


def _write_atomic(path, write):
    """Calls write(f) on a binary file beside path, then renames it onto path:
    a crash or error mid-write leaves the previous file whole. The data are
    fsynced before the rename, so after a power loss the name holds the old
    or the new contents, not a truncated file. A failed write's temporary file
    is removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: no stray temporary either way
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path, state):
    _write_atomic(path, lambda f: torch.save(state, f))


# ---------------------------------------------------------------- checkpoints

# What a checkpoint says it is. Bump the version when its contents change, and
# say in load_checkpoint what an older one lacks.
CHECKPOINT_FORMAT = "lenetalex.train"
CHECKPOINT_VERSION = 1
_CHECKPOINT_KEYS = ("model_name", "epoch", "model", "optimizer", "rng", "history", "args")
# The options that fix the parameters' names and shapes (with the data's
# number of classes, which load_state_dict checks).
_ARCHITECTURE_OPTIONS = ("head", "variant")


class CheckpointError(ValueError):
    """A --resume checkpoint that cannot be used; the message names the file."""

    def __init__(self, path, problem):
        super().__init__(f"checkpoint {os.fspath(path)}: {problem}")


def checkpoint_state(args, epoch, net, optimizer, history):
    """What --checkpoint saves after `epoch` epochs: tensors, dicts, lists,
    numbers and strings only, all that torch.load(weights_only=True) reads.
    (Training draws no Python or NumPy random numbers: only torch's state is
    kept.)"""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model_name": args.model, "epoch": epoch, "model": net.state_dict(),
            "optimizer": optimizer.state_dict(), "rng": _rng_state(), "history": history,
            "args": _config(args)}


def load_checkpoint(path):
    """The checkpoint dict at path, or a CheckpointError saying what is wrong.
    weights_only=True: a pickle that names any function or class (a way to
    run code when loading) is refused before anything in it runs."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({e.strerror or e})") from e
    except Exception as e:  # torch.load fails on bad bytes with many exception types
        raise CheckpointError(path, _load_failure(path, e)) from e
    _check_format(path, ckpt)
    _check_crc(path)
    return ckpt


def _check_crc(path):
    """torch.save stores a CRC-32 for every record of its zip archive, but
    torch.load does not check them: a damaged byte in a tensor would load as
    a wrong number. zipfile's testzip checks them all."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy format: nothing to check against
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # BadZipFile, zlib.error, OSError: a damaged archive
        raise CheckpointError(path, f"corrupt ({type(e).__name__}: {e})") from e
    if bad is not None:
        raise CheckpointError(path, f"corrupt: record {bad} fails its CRC-32 check")


def _load_failure(path, error):
    """Why torch.load(weights_only=True) failed, in a phrase."""
    text = str(error)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return (f"refused: unpickling it would call or build {unsafe.group(1)}, which can run "
                "code; lenetalex train checkpoints hold only tensors, numbers, strings, lists "
                "and dicts")
    if os.path.getsize(path) == 0:
        return "the file is empty"
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first = unpickler.group(1) if unpickler else text.split(". ")[0].strip()
    detail = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return f"not a readable PyTorch file (truncated, corrupt or another format; {detail})"


def _check_format(path, ckpt):
    """Raises CheckpointError unless ckpt is one of ours, of this version."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(path, f"not a lenetalex train checkpoint (it holds a "
                              f"{type(ckpt).__name__}, not a dict)")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"not a lenetalex train checkpoint (no format "
                              f"{CHECKPOINT_FORMAT!r}; lenetalex before format version 1 wrote none)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(path, f"format version {ckpt.get('version')!r}; this lenetalex reads "
                              f"version {CHECKPOINT_VERSION} (a newer lenetalex wrote it?)")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(path, f"incomplete: no {', '.join(missing)}")
    epoch, history = ckpt["epoch"], ckpt["history"]
    if not (isinstance(epoch, int) and isinstance(history, list) and len(history) == epoch >= 0):
        raise CheckpointError(path, f"inconsistent: epoch {epoch!r} with "
                              f"{len(history) if isinstance(history, list) else history!r} history entries")


def restore_checkpoint(path, ckpt, args, net, optimizer):
    """Puts a load_checkpoint dict into net, optimizer and torch's RNG;
    returns (epochs done, history). A CheckpointError if it does not fit."""
    if ckpt["model_name"] != args.model:
        raise CheckpointError(path, f"holds model {ckpt['model_name']!r}; this run trains {args.model!r}")
    saved = ckpt["args"] if isinstance(ckpt["args"], dict) else {}
    for key in _ARCHITECTURE_OPTIONS:
        if key in saved and saved[key] != getattr(args, key):
            raise CheckpointError(path, f"written with --{key} {saved[key]}, this run has "
                                  f"--{key} {getattr(args, key)}")
    _restore(path, "parameters", lambda: net.load_state_dict(ckpt["model"]), args.model)
    _restore(path, "optimizer state", lambda: optimizer.load_state_dict(ckpt["optimizer"]), args.model)
    _restore(path, "RNG state", lambda: _set_rng_state(ckpt["rng"]), args.model)
    return ckpt["epoch"], ckpt["history"]


def _restore(path, what, load, model):
    try:
        load()
    except Exception as e:  # whatever the mismatch, the run must not start
        lines = [line.strip(" .\t") for line in str(e).splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].startswith("Error(s) in loading"):
            lines = lines[1:]  # load_state_dict's heading names the class, not the problem
        raise CheckpointError(path, f"cannot load its {what} into this {model} ({'; '.join(lines)})") from e


def _write_json(path, payload):
    _write_atomic(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))


def _config(args):
    """The plain values of args (not the CLI's func), for JSON and checkpoints."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}


def _rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------- training

def evaluate(net, loss_fn, transform, test, args, device, dtype, ctx):
    """(loss, accuracy) over the test set, sharded over the ranks."""
    net.eval()
    x_all, y_all = test
    idx = torch.arange(ctx.rank, len(y_all), ctx.world, device=y_all.device)
    loss_sum = correct = 0.0
    with torch.no_grad():
        for i in range(0, len(idx), args.eval_batch_size):
            b = idx[i:i + args.eval_batch_size]
            x, y = x_all[b].to(device), y_all[b].to(device)
            x = transform(x) if transform else x.to(dtype)
            out = net(x)
            loss_sum += float(loss_fn(out, y)) * len(b)
            correct += int((net.predictions(out) == y).sum())
    loss_sum, correct, count = ctx.sum([loss_sum, correct, len(idx)], device)
    return loss_sum / max(count, 1), correct / max(count, 1)


def train(args):
    """Runs the training that args describe; returns (model, history). The
    model is the plain module (not the DDP wrapper), on args.device."""
    args = resolve(args)
    # Process-wide settings this run changes, put back when it ends.
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    ctx = Dist(args)
    try:
        return _train(args, ctx)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        ctx.close()


def _train(args, ctx):
    if args.batch_size % ctx.world:
        raise ValueError(f"--batch-size {args.batch_size} must be a multiple of the {ctx.world} ranks")
    device = torch.device(f"cuda:{ctx.local_rank}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.use_deterministic_algorithms(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    say = print if ctx.main else (lambda *a, **k: None)

    net, transform, trainset, testset = build(args, device, dtype)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    if args.model == "lenet5":
        def loss_fn(out, y):
            return net.loss(out, y, j=args.map_j)
    else:
        loss_fn = F.cross_entropy

    start, history = 0, []
    if args.resume:
        if os.path.exists(args.checkpoint):
            ckpt = load_checkpoint(args.checkpoint)
            start, history = restore_checkpoint(args.checkpoint, ckpt, args, net, optimizer)
            say(f"resumed from {args.checkpoint} after epoch {start}")
        else:
            say(f"no checkpoint at {args.checkpoint}: starting from scratch")

    model = net
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False)  # the buffers (RBF prototypes, C3 table) are constants

    if args.compile:
        model = torch.compile(model)
    if device.type == "cuda":  # the whole set fits: index it on the device
        trainset = tuple(t.to(device) for t in trainset)
        testset = tuple(t.to(device) for t in testset)
    x_all, y_all = trainset
    sampler = DistributedSampler(range(len(y_all)), num_replicas=ctx.world, rank=ctx.rank,
                                 shuffle=True, seed=args.seed)
    per_rank = args.batch_size // ctx.world
    say(f"{args.model} ({args.impl}, {args.dtype}, {device}, {ctx.world} process"
        f"{'es' if ctx.world > 1 else ''}): {len(y_all)} training / {len(testset[1])} test images, "
        f"batch {args.batch_size}, {args.epochs} epochs")

    for epoch in range(start, args.epochs):
        lr = lr_for_epoch(args, epoch, history)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long, device=x_all.device)
        steps = math.ceil(len(order) / per_rank)
        bar = _progress(steps, f"epoch {epoch + 1}/{args.epochs}", ctx.main and args.progress)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        t0 = time.perf_counter()
        for step in range(steps):
            if args.warmup and epoch * steps + step <= args.warmup:
                for group in optimizer.param_groups:
                    group["lr"] = lr * min(1.0, (epoch * steps + step + 1) / args.warmup)
            b = order[step * per_rank:(step + 1) * per_rank]
            x, y = x_all[b].to(device, non_blocking=True), y_all[b].to(device, non_blocking=True)
            x = transform(x) if transform else x
            out = model(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * len(b)
            correct += (net.predictions(out.detach()) == y).sum()
            seen += len(b)
            if bar is not None:
                bar.update()
                if step % 20 == 0 or step == steps - 1:
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}",
                                    acc=f"{correct.item() / seen:.4f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        if not math.isfinite(loss_sum.item()):
            raise FloatingPointError(f"epoch {epoch + 1}: the training loss is not finite; lower --lr")
        tr_loss, tr_correct, tr_seen = ctx.sum([loss_sum.item(), correct.item(), seen], device)
        te_loss, te_acc = evaluate(net, loss_fn, transform, testset, args, device, dtype, ctx)
        record = {
            "epoch": epoch + 1, "lr": lr,
            "train_loss": tr_loss / tr_seen, "train_accuracy": tr_correct / tr_seen,
            "test_loss": te_loss, "test_accuracy": te_acc, "test_error": 1.0 - te_acc,
            "images_per_second": tr_seen / train_seconds, "train_seconds": train_seconds,
            "epoch_seconds": time.perf_counter() - t0,
        }
        if history and lr < history[-1]["lr"] and args.schedule == "paper" and args.model == "alexnet":
            record["lr_reduced"] = True
        history.append(record)
        say(f"epoch {epoch + 1}/{args.epochs}: lr {lr:.3g}  train loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.4f}  test loss {te_loss:.4f} acc {te_acc:.4f} "
            f"error {100 * (1 - te_acc):.2f}%  {record['images_per_second']:.0f} img/s, "
            f"{record['epoch_seconds']:.1f} s", flush=True)
        if ctx.main and args.checkpoint:
            save_checkpoint(args.checkpoint, checkpoint_state(args, epoch + 1, net, optimizer, history))
        if ctx.main and args.json:
            _write_json(args.json, {"args": _config(args), "world_size": ctx.world,
                                    "torch": torch.__version__, "epochs": history})
    if ctx.enabled:
        ctx.check_replicas(net)
        say(f"parameters identical on all {ctx.world} ranks")
    return net, history


def cmd_train(args):
    try:
        train(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"lenetalex train: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None):
    return cmd_train(parse_args(argv))
