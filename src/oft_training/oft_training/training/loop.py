"""The fine-tuning loop: L1 on normalised action chunks, AdamW with a x0.1 step decay.

One optimizer step = one global batch of `batch_size` samples, spread over the processes and
`grad_accumulation` micro-batches; the gradient is the mean over the whole global batch, so the
update does not depend on how the batch is split. Precision: training/precision.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections import Counter
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from oft_policy_node import robot
from oft_policy_node.model.openvla_weights import fine_tuned_keys
from oft_policy_node.model.policy import OftPolicy
from oft_training.data.training_set import TrainingSet
from oft_training.grounding import (
    CoTraining,
    GroundingBatches,
    GroundingSet,
    make_head,
    split_views,
    validation_error_cm,
)
from oft_training.training import memory, precision, sharding, state
from oft_training.training.batches import (
    SampleDataset,
    StepBatches,
    collate,
    split_episodes,
    start_weighted_stream,
)
from oft_training.training.config import TrainConfig, check_resume
from oft_training.training.distributed import World, close_world, init_world
from oft_training.training.metrics_log import METRICS_FILE, MetricsLogger, truncate_metrics
from oft_training.training.policy_setup import build_policy, check_data, init_policy_weights

LR_DECAY = 0.1  # the one step decay of the learning rate, at TrainConfig.decay_step
FINAL_DIR = 'final'


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


def run(cfg: TrainConfig) -> Path:
    """Train; returns the final checkpoint folder (what policy_node loads)."""
    world = init_world(cfg.device)
    try:
        return _run(cfg, world)
    finally:
        close_world(world)


def _run(cfg: TrainConfig, world: World) -> Path:
    out = Path(cfg.out)
    if cfg.fsdp and not world.distributed:
        raise ValueError(
            "--fsdp shards over torchrun's processes; this is a world of one (run it with "
            'torchrun --nproc-per-node N)'
        )
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    full = TrainingSet(Path(cfg.data))
    train_names, val_names = split_episodes(
        [e['name'] for e in full.episodes], cfg.val_fraction, cfg.seed
    )
    train_set = TrainingSet(full.root, train_names)
    val_set = TrainingSet(full.root, val_names)
    resolved = precision.resolve(cfg.precision, world.device)
    policy = build_policy(
        cfg.preset,
        cfg.base,
        full.stats,
        full.instructions,
        cfg.no_film,
        cfg.init_vision,
        cfg.action_slots,
        cfg.prefix_steps,
        world.device,
        # Frozen base weights in bf16 only where the forward runs under bf16 autocast: a
        # float32 forward cannot multiply by them.
        precision.DTYPES[resolved],
        precision.DTYPES[cfg.trainable_dtype],
    )
    if cfg.gradient_checkpointing:
        policy.network.enable_gradient_checkpointing()
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
    start_step = 0
    resume_from = state.latest(out) if cfg.resume else None
    saved = None
    if resume_from is not None:  # weights before sharding: they load into whole tensors
        saved = state.load(resume_from, policy)
        check_resume(saved['config'], cfg, resume_from)
        if grounding is not None:
            grounding.head.load_state_dict(saved['grounding_head'])
    if cfg.fsdp:
        sharding.shard(module, policy)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    print(f'train: rank {world.rank}: {memory.expected(module, world.device).describe()}')
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [cfg.decay_step], gamma=LR_DECAY)

    if saved is not None:
        if cfg.fsdp:
            sharding.load_optimizer(module, optimizer, resume_from / sharding.OPTIMIZER_DIR)
        else:
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
        truncate_metrics(out / METRICS_FILE, start_step)
        print(policy.parameter_table())
        print(
            f'train: {cfg.steps} steps of batch {cfg.batch_size} ({world.size} process'
            f'{"es" if world.size > 1 else ""}), lr {cfg.lr} x{LR_DECAY} at step '
            f'{cfg.decay_step}, weight decay {cfg.weight_decay}'
        )
        print(
            f'train: {len(train_set)} samples from {len(train_names)} episodes, validation '
            f'{len(val_set)} samples from {len(val_names)} episodes {val_names}'
        )

    model = module
    if world.distributed and not cfg.fsdp:
        # find_unused_parameters: some trainable tensors get no gradient (e.g. LoRA on the ViT
        # block after the one whose features the model uses); DDP must not wait for them.
        model = DistributedDataParallel(
            module,
            device_ids=[world.device.index] if world.device.type == 'cuda' else None,
            find_unused_parameters=True,
        )
    if cfg.compile:  # around DDP, whose hooks then bucket the compiled graph's gradients
        model = torch.compile(model)
        around = ' around DDP' if isinstance(model._orig_mod, DistributedDataParallel) else ''
        print(f'train: rank {world.rank}: torch.compile of the training step{around}')
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
    dataset = SampleDataset(train_set, policy.config, full.stats, cfg.prefix_steps)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
        persistent_workers=False,
    )
    autocast = precision.autocast(resolved, world.device)
    trainer_settings = {
        'config': dataclasses.asdict(cfg),
        'split': {'train': train_names, 'val': val_names},
    }
    logger = MetricsLogger(out, world, start_step, cfg.steps)
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
                sync = sharding.gradient_sync(
                    module if cfg.fsdp else model, last or not world.distributed
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
            if step == start_step + 1:
                print(f'train: rank {world.rank}: {memory.measured_peak(world.device)}')
            stopping = world.any(stop.requested)
            if step % cfg.save_every == 0 or step == cfg.steps or stopping:
                extra = (
                    {} if grounding is None else {'grounding_head': grounding.head.state_dict()}
                )
                _save(
                    cfg,
                    world,
                    step,
                    policy,
                    module,
                    optimizer,
                    {**trainer_settings, 'scheduler': scheduler.state_dict(), **extra},
                )
            if stopping:
                logger.close()
                if world.is_main:
                    print(f'train: interrupted; saved step {step}. Continue with --resume.')
                raise KeyboardInterrupt
    logger.close()
    final = out / FINAL_DIR
    weights = _gathered(cfg, world, policy)
    if world.is_main:
        policy.save_pretrained(final, base_weights=state.base_weights(policy), state=weights)
        print(f'train: final checkpoint {final} (load with OftPolicy.from_pretrained)')
    world.barrier()
    return final


def _gathered(cfg: TrainConfig, world: World, policy: OftPolicy) -> dict | None:
    """Under FSDP, what a checkpoint of the policy holds, gathered whole onto the main rank's
    host (all ranks call this); None otherwise (the policy's own tensors are whole)."""
    if not cfg.fsdp:
        return None
    if state.base_weights(policy) == 'full':
        return sharding.gathered_state(policy, lambda _name, _t: True, world.is_main)
    keep = set(fine_tuned_keys(policy.network.state_dict()))
    # Plus every 1-D tensor: save_pretrained checks the base's norms and biases against them.
    return sharding.gathered_state(
        policy, lambda name, t: name in keep or t.dim() == 1, world.is_main
    )


def _save(
    cfg: TrainConfig,
    world: World,
    step: int,
    policy: OftPolicy,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
) -> None:
    """Checkpoint `step`. DDP: the main rank writes everything, AdamW's states included (every
    rank holds the same). FSDP: the policy's tensors are gathered onto the main rank, and every
    rank writes its own shard of AdamW's states into the staged folder before it is committed."""
    out = Path(cfg.out)
    weights = _gathered(cfg, world, policy)
    if not cfg.fsdp:
        trainer_state = {**trainer_state, 'optimizer': optimizer.state_dict()}
    if world.is_main:
        state.write(out, step, policy, trainer_state, weights)
    world.barrier()
    if cfg.fsdp:
        sharding.save_optimizer(
            module, optimizer, state.staging(out, step) / sharding.OPTIMIZER_DIR
        )
        world.barrier()
    if world.is_main:
        state.commit(out, step, cfg.keep_checkpoints)
    world.barrier()


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
    # FSDP gathers weights in every forward, so every rank must run the same ones: each runs
    # them all (the same result everywhere) instead of its share.
    mine = indices if cfg.fsdp else indices[world.rank :: world.size]
    total = 0.0
    policy.eval()
    micro = max(cfg.batch_size // (world.size * cfg.grad_accumulation), 1)
    for start in range(0, len(mine), micro):
        batch = collate([dataset[(i, None)] for i in mine[start : start + micro]])
        with autocast:
            loss, _ = policy(batch)
        total += loss.item() * len(batch['instructions'])
    policy.train()
    return (total if cfg.fsdp else world.sum(total)) / count
