"""A small, fast DDP training job on MNIST-shaped synthetic data, used by dlc's tests and as an example.

It follows the torchrun / Kubeflow PyTorchJob environment contract (`MASTER_ADDR`, `MASTER_PORT`,
`WORLD_SIZE`, `RANK`, `LOCAL_RANK`) plus the platform's `PAI_CHECKPOINT_DIR`, `PAI_OUTPUT_DIR` and
`PAI_RESTART_COUNT`. It checkpoints at the end of every epoch, resumes from the newest checkpoint on
start, and reports metrics on stdout as `@pai.metric {json}` lines. See README.md.

Only the standard library and torch are used; nothing is downloaded.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _install_sigterm_handler() -> None:
    """On SIGTERM print one line and exit 143 at once, whatever the main thread is doing.

    A Python signal handler only runs when the main thread executes bytecode, which it does not do
    while blocked in a gloo collective (say, waiting for a peer that hangs). So the C-level handler's
    wakeup fd is watched by a daemon thread, which does the exit. Installed before torch is imported
    so a SIGTERM during the (slow) import also exits 143.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the watcher below does the work

    def watch() -> None:
        while True:
            data = os.read(read_fd, 64)
            if signal.SIGTERM in data:
                os.write(sys.stdout.fileno(), b"received SIGTERM, exiting\n")
                os._exit(143)

    threading.Thread(target=watch, name="sigterm-watcher", daemon=True).start()


_install_sigterm_handler()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DistributedSampler  # noqa: E402

SEED = 1234
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
TRAIN_SIZE = 8192
TEST_SIZE = 2048
HIDDEN = 128
KEEP_CHECKPOINTS = 2
CHECKPOINT_RE = re.compile(r"^ckpt-(\d+)\.pt$")


def log(*parts: object) -> None:
    print(*parts, flush=True)


def metric(**values: int | float) -> None:
    """One metric line for the platform: `@pai.metric ` followed by a JSON object."""
    log("@pai.metric " + json.dumps(values))


# --- arguments and environment ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    # allow_abbrev=False: a hyperparameter such as `--ep=3` must be ignored, not taken for `--epochs`.
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", "--steps_per_epoch", dest="steps_per_epoch", type=int, default=20)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--sleep-per-step",
        "--sleep_per_step",
        dest="sleep_per_step",
        type=float,
        default=0.0,
        help="seconds to sleep after every step (to kill a replica mid-training)",
    )
    p.add_argument(
        "--hang-after-step",
        "--hang_after_step",
        dest="hang_after_step",
        type=int,
        default=-1,
        help="after this global step rank 0 stops printing and sleeps forever (-1: never)",
    )
    p.add_argument(
        "--fail-at-step",
        "--fail_at_step",
        dest="fail_at_step",
        type=int,
        default=-1,
        help="at this global step rank 1 (rank 0 alone) raises and exits 1, only when PAI_RESTART_COUNT is 0",
    )
    p.add_argument(
        "--write-data",
        "--write_data",
        dest="write_data",
        metavar="DIR",
        help="write the synthetic data set to DIR (train.pt, test.pt) and exit, to register it as a dataset",
    )
    args, unknown = p.parse_known_args(argv)
    if args.epochs < 0 or args.steps_per_epoch < 1 or args.batch_size < 1:
        p.error("--epochs must be >= 0, --steps-per-epoch and --batch-size >= 1")
    return args, unknown


@dataclass(frozen=True)
class Env:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    checkpoint_dir: Path
    output_dir: Path
    restart_count: int


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"error: {name}={raw!r} is not an integer") from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_env() -> Env:
    world_size = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise SystemExit(f"error: RANK={rank} WORLD_SIZE={world_size} is not a valid pair")
    port = _int_env("MASTER_PORT", 0)
    if not port:
        if world_size > 1:
            raise SystemExit("error: MASTER_PORT must be set when WORLD_SIZE > 1")
        port = _free_port()
    return Env(
        rank=rank,
        world_size=world_size,
        local_rank=_int_env("LOCAL_RANK", 0),
        master_addr=os.environ.get("MASTER_ADDR") or "127.0.0.1",
        master_port=port,
        checkpoint_dir=Path(os.environ.get("PAI_CHECKPOINT_DIR") or "./checkpoints"),
        output_dir=Path(os.environ.get("PAI_OUTPUT_DIR") or "./output"),
        restart_count=_int_env("PAI_RESTART_COUNT", 0),
    )


# --- data and model --------------------------------------------------------------------------------


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-shaped samples: one smooth 28x28 prototype per class, scaled and shifted, plus noise.

    The prototypes come from the fixed SEED, so every rank and every run sees the same classes; `seed`
    picks the samples (train and held-out sets use different ones).
    """
    g = torch.Generator().manual_seed(SEED)
    coarse = torch.rand(NUM_CLASSES, 1, 7, 7, generator=g)
    protos = F.interpolate(coarse, size=IMAGE_SHAPE[1:], mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.3 * torch.randn(n, 1, 1, 1, generator=g)
    noise = 0.6 * torch.randn(n, *IMAGE_SHAPE, generator=g)
    images = protos[labels] * contrast + brightness + noise
    return images, labels


def write_data(directory: Path) -> None:
    """Save the data set this script would generate, so it can be registered and read back."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, (n, seed) in (("train.pt", (TRAIN_SIZE, SEED + 1)), ("test.pt", (TEST_SIZE, SEED + 2))):
        images, labels = make_data(n, seed)
        atomic_save({"images": images, "labels": labels}, directory / name)


def load_data(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels): from `PAI_DATA_DIR` when it holds the
    files `--write-data` makes (a dataset the job was given), else generated here."""
    data_dir = os.environ.get("PAI_DATA_DIR", "")
    if data_dir and (Path(data_dir) / "train.pt").is_file():
        train = torch.load(Path(data_dir) / "train.pt")
        test = torch.load(Path(data_dir) / "test.pt")
        if rank == 0:
            log(f"data from {data_dir}: {len(train['labels'])} train, {len(test['labels'])} held-out samples")
        return train["images"], train["labels"], test["images"], test["labels"]
    train_x, train_y = make_data(TRAIN_SIZE, SEED + 1)
    test_x, test_y = make_data(TEST_SIZE, SEED + 2)
    return train_x, train_y, test_x, test_y


class MLP(nn.Module):
    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(IMAGE_SHAPE[1] * IMAGE_SHAPE[2], hidden),
            nn.ReLU(),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = int((model(images).argmax(dim=1) == labels).sum().item())
    model.train()
    return correct / len(labels)


# --- checkpoints -----------------------------------------------------------------------------------


def atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint in `directory`, newest first."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    global_step: int,
    loss: float,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ckpt-{epoch}.pt"
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "global_step": global_step,
        "loss": loss,
    }
    atomic_save(state, path)
    for _, old in list_checkpoints(directory)[KEEP_CHECKPOINTS:]:
        old.unlink(missing_ok=True)
    return path


def load_newest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads; a damaged one is reported and the one before it is tried."""
    for _, path in list_checkpoints(directory):
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
            return path, state
        except Exception as e:  # a partial copy or a file from elsewhere: try the one before
            log(f"warning: cannot load checkpoint {path}: {e}")
    return None


# --- training --------------------------------------------------------------------------------------


def hang_forever() -> None:
    while True:
        time.sleep(3600)


def train(args: argparse.Namespace, env: Env) -> None:
    torch.manual_seed(SEED)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    start_epoch, global_step, last_loss = 1, 0, float("nan")
    loaded = load_newest_checkpoint(env.checkpoint_dir)
    if loaded is not None:
        path, state = loaded
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, global_step = int(state["epoch"]) + 1, int(state["global_step"])
        last_loss = float(state.get("loss", float("nan")))
        if env.rank == 0:
            log(f"resumed from checkpoint {path.name} at step={global_step}")
    # Every rank must resume from the same place (a checkpoint dir that is not shared would diverge).
    steps = [0] * env.world_size
    dist.all_gather_object(steps, global_step)
    if len(set(steps)) != 1:
        raise RuntimeError(f"ranks resumed from different checkpoints: global steps {steps}")

    ddp = DistributedDataParallel(model)
    train_x, train_y, test_x, test_y = load_data(env.rank)
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(train_y)),  # type: ignore[arg-type]  # only its length is used
        num_replicas=env.world_size,
        rank=env.rank,
        shuffle=True,
        seed=SEED,
    )
    fail_rank = 1 if env.world_size > 1 else 0
    acc = float("nan")

    for epoch in range(start_epoch, args.epochs + 1):
        sampler.set_epoch(epoch)
        shard = torch.tensor(list(sampler))  # this rank's part of the data, reshuffled every epoch
        for i in range(args.steps_per_epoch):
            global_step += 1
            if global_step == args.fail_at_step and env.rank == fail_rank and env.restart_count == 0:
                log(f"injected failure at step={global_step} on rank={env.rank}")
                raise RuntimeError(
                    f"injected failure at step {global_step} (--fail-at-step, PAI_RESTART_COUNT=0)"
                )
            pos = torch.arange(i * args.batch_size, (i + 1) * args.batch_size) % len(shard)
            idx = shard[pos]
            loss = F.cross_entropy(ddp(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)  # the loss of the whole global batch, as the platform reports it
            last_loss = mean_loss.item() / env.world_size
            if env.rank == 0:
                log(f"step={global_step} epoch={epoch} loss={last_loss:.4f}")
                metric(step=global_step, loss=round(last_loss, 6))
                if global_step == args.hang_after_step:
                    hang_forever()
            if args.sleep_per_step > 0:
                time.sleep(args.sleep_per_step)

        if env.rank == 0:
            acc = accuracy(model, test_x, test_y)
            log(f"epoch={epoch} accuracy={acc:.4f}")
            metric(step=global_step, accuracy=round(acc, 6))
            path = save_checkpoint(env.checkpoint_dir, model, optimizer, epoch, global_step, last_loss)
            log(f"saved checkpoint {path.name} at step={global_step}")
        dist.barrier()

    if env.rank == 0:
        if math.isnan(acc):  # nothing trained in this run (already done): measure the loaded model
            acc = accuracy(model, test_x, test_y)
        env.output_dir.mkdir(parents=True, exist_ok=True)
        model_path = env.output_dir / "model.pt"
        atomic_save(model.state_dict(), model_path)
        info = {
            "architecture": {
                "type": "mlp",
                "input_shape": list(IMAGE_SHAPE),
                "layers": [IMAGE_SHAPE[1] * IMAGE_SHAPE[2], HIDDEN, NUM_CLASSES],
                "activation": "relu",
            },
            "final_loss": None if math.isnan(last_loss) else round(last_loss, 6),
            "accuracy": round(acc, 6),
            "global_step": global_step,
            "epochs": args.epochs,
            "world_size": env.world_size,
        }
        (env.output_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n")
        log(f"saved model to {model_path} global_step={global_step}")
    dist.barrier()


def main(argv: list[str] | None = None) -> int:
    args, unknown = parse_args(argv)
    if args.write_data:
        write_data(Path(args.write_data))
        log(f"wrote the data set to {args.write_data}")
        return 0
    env = read_env()
    log(
        f"rank={env.rank} world_size={env.world_size} local_rank={env.local_rank} restart={env.restart_count}"
    )
    if unknown:
        log(f"ignoring unknown arguments: {' '.join(unknown)}")
    if "OMP_NUM_THREADS" not in os.environ:  # don't let the processes of one node fight for its cores
        per_node = max(1, _int_env("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))

    # the rendezvous store, hosted by rank 0, as `init_method="tcp://..."` would make it
    store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=env.rank == 0)
    dist.init_process_group("gloo", store=store, rank=env.rank, world_size=env.world_size)
    try:
        train(args, env)
    except Exception:
        # Report and leave at once with 1. After a peer died (a collective failed), tearing down gloo's
        # threads at interpreter exit can abort the process (SIGABRT, exit 134) instead.
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    leave(store, env)
    return 0


def leave(store: dist.TCPStore, env: Env) -> None:
    """Exit 0 once every rank is done, without tearing the process group down.

    `destroy_process_group` can abort a rank (`terminate called without an active exception`,
    SIGABRT) although all the work is done, so no rank calls it: the others tell rank 0 they are
    leaving and exit; rank 0, whose store they use for that, waits for them and exits last.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if env.rank != 0:
        store.add("pai_example_done", 1)
        os._exit(0)
    deadline = time.monotonic() + 30
    while store.add("pai_example_done", 0) < env.world_size - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
