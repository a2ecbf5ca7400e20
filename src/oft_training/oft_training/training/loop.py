"""The fine-tuning loop: L1 on normalised action chunks, AdamW with a x0.1 step decay.

One optimizer step = one global batch of `batch_size` samples, spread over the processes and
`grad_accumulation` micro-batches; the gradient is the mean over the whole global batch, so the
update does not depend on how the batch is split. bf16 autocast on CUDA, float32 on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from oft_policy_node import robot
from oft_policy_node.model import checkpoint
from oft_policy_node.model.config import get_preset
from oft_policy_node.model.openvla_weights import load_openvla_base
from oft_policy_node.model.policy import OftPolicy
from oft_policy_node.model.tokenizer import load_tokenizer
from oft_training.data.training_set import TrainingSet
from oft_training.grounding import (
    CoTraining,
    GroundingBatches,
    GroundingSet,
    make_head,
    split_views,
    validation_error_cm,
)
from oft_training.training import state
from oft_training.training.batches import (
    SampleDataset,
    StepBatches,
    collate,
    split_episodes,
    start_weighted_stream,
)
from oft_training.training.distributed import World, close_world, init_world
from oft_training.vision_pretraining import load_backbone

METRICS_FILE = 'metrics.jsonl'
LR_DECAY = 0.1  # the one step decay of the learning rate, at TrainConfig.decay_step
FINAL_DIR = 'final'
# Settings that must not change when a run resumes (they change the result of every step).
FROZEN_ON_RESUME = (
    'data',
    'preset',
    'no_film',
    'base',
    'init_vision',
    'init_policy',
    'freeze_vision',
    'start_repeats',
    'start_seconds',
    'grounding',
    'grounding_weight',
    'batch_size',
    'lr',
    'lr_decay_step',
    'weight_decay',
    'val_fraction',
    'seed',
)
# Compared as resolved paths: `runs/x` and `/repo/runs/x` match.
PATH_SETTINGS = ('data', 'base', 'init_vision', 'init_policy', 'grounding')


@dataclass(frozen=True)
class TrainConfig:
    """Every `train` option; validated on construction."""

    data: str
    out: str
    preset: str = 'tiny'
    no_film: bool = False  # ablation: the preset without FiLM (no language in the vision path)
    base: str | None = None  # base OpenVLA checkpoint folder (openvla-7b), else random init
    init_vision: str | None = None  # pretrain_vision backbone.pt: DINOv2 + SigLIP start weights
    init_policy: str | None = None  # a trained policy (or training checkpoint) to start from
    freeze_vision: bool = False  # keep those weights (FiLM maps still train), as LoRA keeps a base
    start_repeats: int = 1  # samples of an episode's first start_seconds are drawn this often
    start_seconds: float = 1.0
    grounding: str | None = None  # render_grounding .npz: co-train "where is the named object"
    grounding_weight: float = 1.0  # its L1 (standardised positions) relative to the action L1
    steps: int = 1000
    batch_size: int = 8  # global: over all processes and accumulation micro-batches
    grad_accumulation: int = 1
    lr: float = 5e-4
    lr_decay_step: int | None = None  # step of the x0.1 decay; None: 80 % of `steps`
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    val_every: int = 100
    val_samples: int = 64
    save_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    workers: int = 0
    device: str = 'auto'
    resume: bool = False

    def __post_init__(self) -> None:
        get_preset(self.preset)  # unknown preset: "did you mean" error
        for name in (
            'steps',
            'batch_size',
            'grad_accumulation',
            'val_every',
            'val_samples',
            'save_every',
        ):
            if getattr(self, name) < 1:
                raise ValueError(f'{name}={getattr(self, name)} must be >= 1')
        if self.lr <= 0:
            raise ValueError(f'lr={self.lr} must be > 0')
        if self.workers < 0 or self.keep_checkpoints < 1:
            raise ValueError('workers must be >= 0 and keep_checkpoints >= 1')
        if self.start_repeats < 1 or self.start_seconds < 0:
            raise ValueError(
                f'start_repeats={self.start_repeats} must be >= 1 and '
                f'start_seconds={self.start_seconds} >= 0'
            )
        if self.grounding_weight <= 0:
            raise ValueError(f'grounding_weight={self.grounding_weight} must be > 0')
        if self.freeze_vision and self.init_vision is None and self.init_policy is None:
            raise ValueError(
                'freeze_vision needs init_vision or init_policy: frozen random '
                'encoders see nothing'
            )
        if self.init_policy is not None and (
            self.base is not None or self.init_vision is not None
        ):
            raise ValueError(
                'init_policy already holds every weight; it cannot be combined '
                'with base or init_vision'
            )

    @property
    def decay_step(self) -> int:
        return self.lr_decay_step if self.lr_decay_step is not None else int(0.8 * self.steps)


class StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop finishes the step, saves, and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.requested = True

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def build_policy(
    config_name: str,
    base: str | None,
    data: TrainingSet,
    no_film: bool = False,
    init_vision: str | None = None,
) -> OftPolicy:
    config = get_preset(config_name)
    if no_film:
        config = config.replace(use_film=False)
    tokenizer = load_tokenizer(config.tokenizer, base, config.num_action_bins)
    policy = OftPolicy(
        config, tokenizer=tokenizer, stats=data.stats, instructions=data.instructions
    )
    if base is not None:
        load_openvla_base(policy.network, base)
    if init_vision is not None:
        metrics = load_backbone(init_vision, policy.network.vision, config)
        print(
            f'train: vision backbone from {init_vision} (held-out localisation error, cm: '
            f'{metrics.get("error_cm")})'
        )
    return policy


def init_policy_weights(policy: OftPolicy, folder: Path) -> dict:
    """Load every network weight of a trained policy into `policy` (fine-tuning a trained
    policy on new demos). `folder`: a policy folder (`final`) or a training checkpoint
    (`checkpoints/step_N`), whose trainer state is returned (else {}): with --grounding its
    head starts where that run left it. The new data's normalisation statistics are kept."""
    is_training_checkpoint = (folder / state.TRAINER_STATE).is_file()
    weights_dir = folder / state.POLICY_DIR if is_training_checkpoint else folder
    if not (weights_dir / checkpoint.WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f'--init-policy {folder}: neither a policy folder (with '
            f'{checkpoint.WEIGHTS_FILE}) nor a training checkpoint'
        )
    saved = checkpoint.read_config(weights_dir)
    mine = policy.config
    if (saved.name, saved.use_film) != (mine.name, mine.use_film):
        raise ValueError(
            f'--init-policy {folder} is preset {saved.name!r} with '
            f'use_film={saved.use_film}; this run builds {mine.name!r} with '
            f'use_film={mine.use_film}'
        )
    print(f'train: all weights from {weights_dir}')
    if is_training_checkpoint:
        return state.load(folder, policy)
    state.load_weights(weights_dir, policy)
    return {}


def check_data(data: TrainingSet, policy: OftPolicy) -> None:
    cfg = policy.config
    if data.chunk_size != cfg.chunk_size:
        raise ValueError(
            f'{data.root} was converted for K={data.chunk_size} but preset '
            f'{cfg.name!r} has K={cfg.chunk_size}; re-run convert --preset '
            f'{cfg.name}'
        )
    missing = [c for c in cfg.camera_names if c not in data.cameras]
    if missing:
        raise ValueError(f'{data.root} lacks cameras {missing} that preset {cfg.name!r} uses')


def run(cfg: TrainConfig) -> Path:
    """Train; returns the final checkpoint folder (what policy_node loads)."""
    world = init_world(cfg.device)
    try:
        return _run(cfg, world)
    finally:
        close_world(world)


def _run(cfg: TrainConfig, world: World) -> Path:
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    full = TrainingSet(Path(cfg.data))
    train_names, val_names = split_episodes(
        [e['name'] for e in full.episodes], cfg.val_fraction, cfg.seed
    )
    train_set = TrainingSet(full.root, train_names)
    val_set = TrainingSet(full.root, val_names)
    policy = build_policy(cfg.preset, cfg.base, full, cfg.no_film, cfg.init_vision)
    if cfg.freeze_vision:
        for encoder in (policy.network.vision.dino, policy.network.vision.siglip):
            encoder.requires_grad_(False)
    check_data(full, policy)
    start_state = (
        init_policy_weights(policy, Path(cfg.init_policy)) if cfg.init_policy is not None else {}
    )
    module, grounding = policy, None
    if cfg.grounding is not None:
        grounding = _Grounding(cfg, policy, full, world)
        if 'grounding_head' in start_state:  # a head that already reads these slot states
            grounding.head.load_state_dict(start_state['grounding_head'])
        module = CoTraining(policy, grounding.head, cfg.grounding_weight)
    module.to(world.device)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [cfg.decay_step], gamma=LR_DECAY)

    start_step = 0
    resume_from = state.latest(out) if cfg.resume else None
    if resume_from is not None:
        saved = state.load(resume_from, policy)
        _check_resume(saved['config'], cfg, resume_from)
        if grounding is not None:
            grounding.head.load_state_dict(saved['grounding_head'])
        optimizer.load_state_dict(saved['optimizer'])
        scheduler.load_state_dict(saved['scheduler'])
        state.set_rng_state(saved['rng'])
        start_step = saved['step']
        # A resumed run may be given other --steps, so the default decay step (80 % of them)
        # moves: the saved scheduler's milestone came from the first --steps, and MultiStepLR
        # only decays on reaching a milestone exactly, so the rate is set here as well.
        scheduler.milestones = Counter([cfg.decay_step])
        for group in optimizer.param_groups:
            group['lr'] = cfg.lr * (LR_DECAY if start_step >= cfg.decay_step else 1.0)
    elif cfg.resume and world.is_main:
        print(f'train: nothing to resume in {out / "checkpoints"}; starting at step 0')
    elif not cfg.resume and state.latest(out) is not None:
        raise FileExistsError(
            f'{out} already holds checkpoints; pass --resume to continue '
            'that run or choose another --out'
        )
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out / METRICS_FILE, start_step)
        print(policy.parameter_table())
        print(
            f'train: {len(train_set)} samples from {len(train_names)} episodes, validation '
            f'{len(val_set)} samples from {len(val_names)} episodes {val_names}'
        )

    model = module
    if world.distributed:
        # find_unused_parameters: some trainable tensors get no gradient (e.g. LoRA on the ViT
        # block after the one whose features the model uses); DDP must not wait for them.
        model = DistributedDataParallel(
            module,
            device_ids=[world.device.index] if world.device.type == 'cuda' else None,
            find_unused_parameters=True,
        )
    start_ticks = round(cfg.start_seconds * robot.CONTROL_RATE_HZ)
    stream = start_weighted_stream(train_set.sample_ticks(), start_ticks, cfg.start_repeats)
    sampler = StepBatches(
        len(train_set),
        cfg.batch_size,
        cfg.seed,
        start_step,
        cfg.steps,
        world.rank,
        world.size,
        cfg.grad_accumulation,
        stream,
    )
    dataset = SampleDataset(train_set, policy.config, full.stats)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
        persistent_workers=False,
    )
    autocast = (
        torch.autocast('cuda', dtype=torch.bfloat16)
        if world.device.type == 'cuda'
        else contextlib.nullcontext()
    )
    trainer_settings = {
        'config': dataclasses.asdict(cfg),
        'split': {'train': train_names, 'val': val_names},
    }
    logger = _Logger(out, world, start_step, cfg.steps)
    step = start_step
    micro_batches = iter(loader)
    policy.train()
    with StopRequest() as stop:
        while step < cfg.steps:
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, grounding_cm = 0.0, 0.0
            for i in range(cfg.grad_accumulation):
                batch = next(micro_batches)
                last = i == cfg.grad_accumulation - 1
                sync = (
                    model.no_sync() if world.distributed and not last else contextlib.nullcontext()
                )
                with sync, autocast:
                    if grounding is None:
                        loss, _ = model(batch)
                    else:
                        loss, parts = model(batch, grounding.micro_batch(step, i, world))
                        grounding_cm += parts['grounding_cm'] / cfg.grad_accumulation
                    (loss / cfg.grad_accumulation).backward()
                loss_sum += loss.item() / cfg.grad_accumulation
            lr = optimizer.param_groups[0]['lr']  # the rate this step was taken with
            optimizer.step()
            scheduler.step()
            step += 1
            metrics = {
                'step': step,
                'loss': world.mean(loss_sum),
                'lr': lr,
                'step_s': time.perf_counter() - started,
            }  # data + forward + update
            if grounding is not None:
                metrics['grounding_cm'] = world.mean(grounding_cm)
            if step % cfg.val_every == 0 or step == cfg.steps:
                metrics['val_l1'] = _validate(policy, val_set, full, cfg, world, autocast)
                if grounding is not None and world.is_main:
                    with autocast:
                        metrics['val_grounding_cm'] = grounding.validate(cfg.val_samples)
            logger.log(metrics)
            stopping = world.any(stop.requested)
            if step % cfg.save_every == 0 or step == cfg.steps or stopping:
                if world.is_main:
                    extra = (
                        {}
                        if grounding is None
                        else {'grounding_head': grounding.head.state_dict()}
                    )
                    state.save(
                        out,
                        step,
                        policy,
                        {
                            **trainer_settings,
                            'optimizer': optimizer.state_dict(),
                            'scheduler': scheduler.state_dict(),
                            **extra,
                        },
                        cfg.keep_checkpoints,
                    )
                world.barrier()
            if stopping:
                logger.close()
                if world.is_main:
                    print(f'train: interrupted; saved step {step}. Continue with --resume.')
                raise KeyboardInterrupt
    logger.close()
    final = out / FINAL_DIR
    if world.is_main:
        policy.save_pretrained(final)
        print(f'train: final checkpoint {final} (load with OftPolicy.from_pretrained)')
    world.barrier()
    return final


class _Grounding:
    """Grounding co-training's data and head (see oft_training.grounding)."""

    def __init__(
        self, cfg: TrainConfig, policy: OftPolicy, full: TrainingSet, world: World
    ) -> None:
        if cfg.batch_size // (world.size * cfg.grad_accumulation) < 2:
            raise ValueError(
                'grounding needs micro-batches of at least 2 (its head normalises '
                f'over the batch); batch size {cfg.batch_size} over {world.size} '
                f'processes x {cfg.grad_accumulation} accumulation gives fewer'
            )
        data = GroundingSet.load(cfg.grounding)
        self.policy, self.head = policy, make_head(policy, data)
        self.accumulation = cfg.grad_accumulation
        train_views, self.val_views = split_views(data, cfg.val_fraction)
        self.batches = GroundingBatches(
            data, train_views, policy.config, full.stats, cfg.batch_size, cfg.seed
        )
        print(
            f'train: grounding co-training on {len(train_views)} views x '
            f'{len(data.instructions)} instructions from {cfg.grounding} (weight '
            f'{cfg.grounding_weight}), {len(self.val_views)} views held out'
        )

    def micro_batch(self, step: int, index: int, world: World) -> dict:
        keys = self.batches.step_batch(step, world.rank, world.size)
        size = len(keys) // self.accumulation
        return self.batches.batch(keys[index * size : (index + 1) * size])

    def validate(self, views: int) -> float:
        self.policy.eval()
        self.head.eval()
        try:
            return validation_error_cm(self.policy, self.head, self.batches, self.val_views, views)
        finally:
            self.policy.train()
            self.head.train()


def _check_resume(saved: dict, cfg: TrainConfig, folder: Path) -> None:
    now = dataclasses.asdict(cfg)
    changed = {
        k: (saved.get(k), now[k])
        for k in FROZEN_ON_RESUME
        if _setting_key(k, saved.get(k)) != _setting_key(k, now[k])
    }
    if changed:
        raise ValueError(
            f'cannot resume from {folder}: settings changed since it was saved '
            f'(saved, now): {changed}'
        )


def _setting_key(name: str, value: object) -> object:
    return str(Path(value).resolve()) if name in PATH_SETTINGS and value else value


@torch.no_grad()
def _validate(
    policy: OftPolicy,
    val_set: TrainingSet,
    full: TrainingSet,
    cfg: TrainConfig,
    world: World,
    autocast: contextlib.AbstractContextManager,
) -> float | None:
    """Mean L1 (normalised actions) over up to `val_samples` evenly spaced held-out samples,
    with the inference view of the images; None without validation episodes."""
    if len(val_set) == 0:
        return None
    count = min(cfg.val_samples, len(val_set))
    indices = [round(i * (len(val_set) - 1) / max(count - 1, 1)) for i in range(count)]
    dataset = SampleDataset(val_set, policy.config, full.stats)
    mine = indices[world.rank :: world.size]
    total = 0.0
    policy.eval()
    micro = max(cfg.batch_size // (world.size * cfg.grad_accumulation), 1)
    for start in range(0, len(mine), micro):
        batch = collate([dataset[(i, None)] for i in mine[start : start + micro]])
        with autocast:
            loss, _ = policy(batch)
        total += loss.item() * len(batch['instructions'])
    policy.train()
    return world.sum(total) / count


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint a run resumes from (they will be redone)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)['step'] <= step
    ]
    path.write_text(''.join(line + '\n' for line in kept))


class _Logger:
    """metrics.jsonl + TensorBoard + a tqdm bar, on the main process only."""

    def __init__(self, out: Path, world: World, start: int, total: int) -> None:
        self.main = world.is_main
        if not self.main:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.jsonl = (out / METRICS_FILE).open('a')
        self.tb = SummaryWriter(str(out / 'tensorboard'), purge_step=start + 1)
        self.bar = tqdm(total=total, initial=start, desc='train', unit='step', file=sys.stderr)

    def log(self, metrics: dict) -> None:
        if not self.main:
            return
        self.jsonl.write(json.dumps(metrics) + '\n')
        self.jsonl.flush()
        for key, value in metrics.items():
            if key != 'step' and value is not None:
                self.tb.add_scalar(
                    f'{"val" if key.startswith("val") else "train"}/{key}', value, metrics['step']
                )
        self.bar.set_postfix(loss=f'{metrics["loss"]:.4f}', lr=f'{metrics["lr"]:.1e}')
        self.bar.update(1)

    def close(self) -> None:
        if self.main:
            self.bar.close()
            self.tb.close()
            self.jsonl.close()
