"""The configuration's schema: one dataclass per concern, with its defaults, and :func:`validate`, the value rules
that types alone cannot express. :mod:`hmh.config` loads YAML into it (and re-exports every name here).
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import typing
from dataclasses import dataclass, field
from typing import Any

from hmh.errors import HmhError

__all__ = [
    "BACKBONES", "DEVICE", "DEVICES", "GENERATION_OBJECTIVES", "KEEP", "PICKS", "PRECISIONS", "RULES",
    "SEARCH_OBJECTIVES", "SYNTHETIC_PROFILES", "WINNERS", "Config", "ConfigError", "DataConfig", "LossConfig",
    "ModelConfig", "OptimConfig", "SearchConfig", "SelectionConfig", "TrainConfig", "parse_pick", "shown", "validate",
]

BACKBONES = ("resnet18", "resnet34", "resnet50")
WINNERS = ("frame", "sample")  # loss.winner
SELECTION_TARGETS = ("jrc", "jrc_graded")  # loss.selection_target
EVIDENCE = ("none", "reprojection", "sampled", "both")  # selection.evidence
RULES = ("learned", "reprojection", "combined")  # selection.rule
REPROJECTION_ALIGNS = ("none", "similarity")  # selection.reprojection_align
UNFOLDER_STRIDES = (8, 4)  # selection.unfolder_stride: crop pixels per cell of the Unfolder's maps
SYNTHETIC_PROFILES = ("full", "bench")  # hmh.data.motion.PROFILES (kept equal by a test)
KEEP = ("best", "last")  # train.keep
GENERATION_OBJECTIVES = ("mean_of_k", "best_of_k", "label_oracle", "hyp0")  # train.generation_objective
PRECISIONS = ("fp32", "bf16", "fp16")  # train.precision
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # train.device and every --device (hmh.train.loop.resolve_device)
DEVICES = "auto, cpu, cuda or cuda:N"
SEARCH_OBJECTIVES = ("mpjpe", "mpjpe_ms")  # search.objectives (hmh.results.tables.OBJECTIVE_KEYS)
SCHEDULERS = ("asha", "brief_then_finish")  # search.scheduler (tune.search, tune.searcher)
SAMPLERS = ("tpe", "random")  # search.sampler (tune.search.optuna_sampler)
PICK = re.compile(r"min_mpjpe|min_ms|max_ms=(?P<ms>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")  # search.pick
PICKS = "min_mpjpe, min_ms or max_ms=<ms per image, a number > 0>"
MAX_HYPOTHESES = 128  # model.num_hypotheses: K (the paper's 16, a study's 64, with room)
MAX_IMAGE_SIZE = 1024  # model.image_size and data.synthetic_size: pixels per side (the paper's 256, with room)
SEED_LIMIT = 2**32  # every seed: 0 <= seed < 2^32 (NumPy's range; torch and Python accept it too)
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # search.experiment: one folder of the storage root
_SHOWN = reprlib.Repr()
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlevel = 80, 80, 3
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 8


class ConfigError(HmhError, ValueError):
    """An invalid configuration: the message names the key, the value and, when known, the file."""


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, abbreviated (``...``) to at most ~100 characters however large or deeply
    nested the value is (it never builds the full repr)."""
    text = _SHOWN.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


@dataclass
class ModelConfig:
    """Generation model (and the parts of the selection model it shares)."""

    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50
    pretrained: bool = False  # ImageNet weights: needs internet once; off by default
    image_size: int = 128  # input crop side S in pixels (paper: 256)
    embed_dim: int = 128  # E (paper: 512)
    num_hypotheses: int = 4  # K (paper: 16)
    num_frames: int = 3  # T: past, current, future
    mht_blocks: int = 2  # Multi-Hypothesis Transformer encoder blocks (paper: 4)
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    mano_path: str = ""  # folder or file with MANO_RIGHT.{pkl,npz}; "" = the synthetic hand from the cache


@dataclass
class SelectionConfig:
    """Selection (reward) model and top-n aggregation."""

    top_n: int = 2  # n hypotheses kept and averaged (paper: 4)
    decoder_blocks: int = 2  # transformer decoder blocks (paper: 4)
    msf: bool = True  # Model-Specific Feature query; False = the "w/o MSF" ablation
    init_from_generator: bool = True  # initialise its backbone and Unfolder from the trained generator's
    embedding_std: float = 1.0  # init std of its temporal and joint position embeddings (1.0: standard normal,
    # as the generator's; smaller keeps them from swamping the hypothesis query at the start)
    evidence: str = "none"  # hypothesis-specific evidence added to the query tokens: none | reprojection (each
    # hypothesis' 2D joints vs the selector's Unfolder joints) | sampled (stride-8 backbone features at each
    # hypothesis' 2D joints, ScoreHypo) | both
    rule: str = "learned"  # how hypotheses are ranked: learned (the selector's reward) | reprojection (no selector
    # and no selection stage: the 2D reprojection error against the generator's own Unfolder joints, D3DP's JPMA) |
    # combined (the selector's reward times the reprojection one: a trained selector, the product ranks)
    reprojection_align: str = "none"  # how a hypothesis' 2D joints meet the 2D evidence, in the reprojection rule and
    # evidence: none (as they are, in crop pixels) | similarity (each frame's joints centred and scaled onto the
    # evidence's first, so only the hand's 2D shape counts, not where the hypothesis puts it or how big)
    unfolder_stride: int = 8  # crop pixels per heatmap cell of the selector's own Unfolder: 8 (the generator's,
    # BlurHandNet's) | 4 (one more upsampling stage, from the backbone's stride-4 map: 2x finer 2D joints)
    set_blocks: int = 0  # transformer blocks over the K hypotheses' pooled tokens before the reward head, so that
    # each reward sees the other hypotheses (no slot embedding: permuting them permutes the rewards); 0 = each
    # hypothesis scored alone, as in the dissertation


@dataclass
class LossConfig:
    """Loss weights (lambda) and the alphas of the diversity and JRC losses."""

    joint_3d: float = 10.0
    proj: float = 0.0625
    mano: float = 1.0
    aux: float = 0.25
    diversity: float = 0.1
    diversity_alpha: float = 1.0  # normalising factor of the feature-space diversity loss
    jrc: float = 1.0
    jrc_alpha: float = 0.5  # alpha * calibration + (1 - alpha) * ranking
    winner: str = "frame"  # winner-takes-all: frame (each term and frame its own, Eq. 3.2-3.4) | sample (one per
    # sample by 3D joint error, used by every term: the hypothesis trained as one sequence)
    selection_target: str = "jrc"  # selector target: jrc (binary top-n labels, Eq. 3.8-3.11) | jrc_graded (JRC plus
    # a pairwise RankNet term on the hypotheses' sequence errors, weighted by rank_weight)
    rank_weight: float = 0.0  # weight of the RankNet term of jrc_graded (0 with jrc)
    mode_hypothesis: bool = False  # hypothesis 0 is a mode (ProHMR): trained on every sample with the full loss,
    # outside the winner-takes-all of the other K-1; the selector ranks it with them. Needs K >= 2


@dataclass
class OptimConfig:
    """AdamW for both stages; step decay for generation, cosine for selection (as in the method)."""

    lr: float = 1e-4  # generation stage
    selection_lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    milestones: list[int] = field(default_factory=lambda: [10, 13])  # generation: lr x gamma at these epochs
    gamma: float = 0.1


@dataclass
class DataConfig:
    """Where the data comes from: a BlurHand root, or the synthetic dataset built into the cache."""

    root: str = ""  # BlurHand root (real or synthetic); "" = synthetic dataset from the cache
    require_root: bool = False  # refuse an empty root instead of building the synthetic dataset (hmh.train.runner)
    synthetic_train: int = 2000  # samples written per split when building the synthetic dataset
    synthetic_test: int = 400
    synthetic_size: int = 256  # written image side in pixels
    synthetic_subframes: int = 9  # sub-frames averaged into one blurred image (BlurHand: 33)
    synthetic_seed: int = 0
    synthetic_profile: str = "full"  # full | bench: what hands, cameras and backgrounds are drawn from
    val_fraction: float = 0.1  # share of training captures held out for validation (search objective)
    augment: bool = True
    skip_bad_images: bool = False  # skip and count unreadable images instead of failing
    skip_bad_annotations: bool = False  # skip and count samples with NaN/inf annotation values instead of failing
    max_train_samples: int = 0  # 0 = all
    max_eval_samples: int = 0  # 0 = all
    loader_workers: int = -1  # DataLoader worker processes; -1 = from the CPUs the run holds (runner.loader_workers)


@dataclass
class TrainConfig:
    """Epochs, batch, seed, device and where one run writes."""

    generation_epochs: int = 13
    selection_epochs: int = 30
    batch_size: int = 48
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of the models' forward passes, on any device (MANO,
    # losses and metrics stay fp32); fp16 adds a GradScaler
    channels_last: bool = False  # channels_last memory format for the convolutional backbones and their input
    compile: bool = False  # torch.compile
    out_dir: str = "runs/default"
    log_every: int = 20  # steps between console/TensorBoard loss lines
    keep: str = "best"  # hmh train: checkpoint each stage keeps: best (by validation) | last (the method)
    generation_objective: str = "mean_of_k"  # the validation reduction (current-frame MPJPE) that stands for the
    # final before a selector exists: it ranks generation epochs (keep: best) and trials at ASHA's generation-stage
    # rungs and in the searcher's intermediate values: mean_of_k | best_of_k | label_oracle | hyp0
    generator: str = ""  # hmh train: a generation checkpoint to start from; its stage is then skipped (selectors
    # with different settings on one generator, as the dissertation's Table 4.3 compares them); its model.* must match


@dataclass
class SearchConfig:
    """Ray Tune search and the final retrain (used by ``tune/``)."""

    experiment: str = "demo"
    space: str = ""  # search space YAML; "" = tune/spaces/default.yaml
    num_samples: int = 4
    seed: int = 0
    scheduler: str = "asha"  # how trials are stopped early (search.objectives=mpjpe): asha (asynchronous: a trial
    # reaching a rung goes on if it is in the top 1/reduction_factor of the trials that reached it) |
    # brief_then_finish (rounds of round_trials trials: each trains grace_period epochs, then the best
    # round_trials // reduction_factor of the round finish their budget from their checkpoints, the others stop)
    round_trials: int = 8  # brief_then_finish: the trials of a round (search.num_samples are drawn in such rounds)
    grace_period: int = 1  # epochs before a trial may be stopped (ASHA's first rung; brief_then_finish: the brief)
    sampler: str = "tpe"  # Optuna's sampler: tpe | random
    tpe_startup_trials: int = 10  # Optuna TPE: random trials before it models the space (Optuna's default: 10)
    tpe_multivariate: bool = False  # Optuna TPE: model the parameters jointly (benchmarks/search_efficiency.py)
    reduction_factor: int = 2  # ASHA keeps the top 1/reduction_factor at a rung; brief_then_finish of a round
    num_workers: int = 1  # Ray Train workers per trial
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 1  # worker failures a Train run survives
    storage_path: str = ""  # "" = results/; use shared storage (s3://, gs://, NFS) on multi-node clusters
    final_generation_epochs: int = 0  # final retrain budget; 0 = train.generation_epochs
    final_selection_epochs: int = 0
    final_max_train_samples: int = 0  # training samples of the final retrain; 0 = all (trials: data.max_*)
    final_retrain: bool = True  # retrain the best configuration and evaluate it on the test split
    max_concurrent_trials: int = 0  # 0 = as many as the cluster holds at its largest; > 0 caps that
    cluster: str = ""  # an autoscaling cluster's definition (cluster/aws-gpu.yaml, cluster/kuberay-raycluster.yaml):
    # its node types at their maximum counts size the search; "" = the nodes up now (a fixed cluster or this machine)
    controller_failure_limit: int = 5  # Train worker-group start failures before a run fails (each a timeout of
    # RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S: Ray's 60 s, or 1200 s on the clusters in cluster/, for nodes to boot)
    objectives: str = "mpjpe"  # mpjpe: the validation MPJPE alone (ASHA) | mpjpe_ms: MPJPE and inference ms per
    # image, a Pareto front (no early stopping)
    pick: str = "min_mpjpe"  # mpjpe_ms: the front's point the final retrain takes: min_mpjpe | min_ms | max_ms=<ms>
    generator: str = ""  # a checkpoint (hmh train's or a search's) whose generator every trial and the final retrain
    # take, frozen: they train the selection stage alone (tune/spaces/selection.yaml); its model.* must match


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


def parse_pick(text: str) -> tuple[str, float] | None:
    """``search.pick`` as ``(rule, max_ms)``: ``("min_mpjpe", inf)``, ``("min_ms", inf)`` or ``("max_ms", limit)``
    with a finite limit > 0 (ms per image); None when ``text`` is none of :data:`PICKS`.
    :func:`hmh.results.pareto.choose`
    applies it."""
    match = PICK.fullmatch(text)
    if match is None:
        return None
    limit = float(match["ms"]) if match["ms"] else math.inf
    if match["ms"] and not 0 < limit < math.inf:
        return None
    return text.partition("=")[0], limit


def _finite_checks(config: Config) -> list[tuple[bool, str, Any, str]]:
    """Every float key must be finite (YAML's ``.inf``/``.nan`` and ``--set k=inf`` alike): listed first, so a
    non-finite value is called that rather than failing a range rule."""
    checks = []
    for section in dataclasses.fields(config):
        part = getattr(config, section.name)
        hints = typing.get_type_hints(type(part))
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if hints[f.name] is float:
                checks.append((math.isfinite(value), f"{section.name}.{f.name}", value, "a finite number"))
    return checks


def validate(config: Config) -> Config:
    """Check values that types alone cannot; raise :class:`ConfigError` naming the key."""
    m, s, lo, o, d, t, se = (config.model, config.selection, config.loss, config.optim, config.data, config.train,
                             config.search)
    checks: list[tuple[bool, str, Any, str]] = [
        *_finite_checks(config),
        (m.backbone in BACKBONES, "model.backbone", m.backbone, f"one of {', '.join(BACKBONES)}"),
        (1 <= m.num_hypotheses <= MAX_HYPOTHESES, "model.num_hypotheses", m.num_hypotheses,
         f"1 <= K <= {MAX_HYPOTHESES}"),
        (m.num_frames == 3, "model.num_frames", m.num_frames, "T = 3 (past, current, future)"),
        (32 <= m.image_size <= MAX_IMAGE_SIZE and m.image_size % 32 == 0, "model.image_size", m.image_size,
         f"a multiple of 32 from 32 to {MAX_IMAGE_SIZE}"),
        (m.num_heads >= 1, "model.num_heads", m.num_heads, ">= 1"),
        (m.num_heads >= 1 and m.embed_dim >= 1 and m.embed_dim % m.num_heads == 0, "model.embed_dim", m.embed_dim,
         "a positive multiple of model.num_heads"),
        (m.mht_blocks >= 1, "model.mht_blocks", m.mht_blocks, ">= 1"),
        (m.mlp_ratio > 0, "model.mlp_ratio", m.mlp_ratio, "> 0"),
        (0 <= m.dropout < 1, "model.dropout", m.dropout, "in [0, 1)"),
        (s.top_n >= 1, "selection.top_n", s.top_n, "top_n >= 1"),
        (s.top_n <= m.num_hypotheses, "selection.top_n", s.top_n,
         f"top_n <= model.num_hypotheses (K = {m.num_hypotheses})"),
        (s.decoder_blocks >= 1, "selection.decoder_blocks", s.decoder_blocks, ">= 1"),
        (s.set_blocks >= 0, "selection.set_blocks", s.set_blocks, ">= 0"),
        (s.embedding_std > 0, "selection.embedding_std", s.embedding_std, "> 0"),
        (s.evidence in EVIDENCE, "selection.evidence", s.evidence, f"one of {', '.join(EVIDENCE)}"),
        (s.rule in RULES, "selection.rule", s.rule, f"one of {', '.join(RULES)}"),
        (s.reprojection_align in REPROJECTION_ALIGNS, "selection.reprojection_align", s.reprojection_align,
         f"one of {', '.join(REPROJECTION_ALIGNS)}"),
        (s.unfolder_stride in UNFOLDER_STRIDES, "selection.unfolder_stride", s.unfolder_stride,
         f"one of {', '.join(map(str, UNFOLDER_STRIDES))}"),
        (lo.diversity_alpha > 0, "loss.diversity_alpha", lo.diversity_alpha, "> 0"),
        (0 <= lo.jrc_alpha <= 1, "loss.jrc_alpha", lo.jrc_alpha, "in [0, 1]"),
        (lo.winner in WINNERS, "loss.winner", lo.winner, f"one of {', '.join(WINNERS)}"),
        (lo.selection_target in SELECTION_TARGETS, "loss.selection_target", lo.selection_target,
         f"one of {', '.join(SELECTION_TARGETS)}"),
        (lo.rank_weight == 0 or lo.selection_target == "jrc_graded", "loss.rank_weight", lo.rank_weight,
         "0 unless loss.selection_target=jrc_graded (the RankNet term it weights)"),
        (not lo.mode_hypothesis or m.num_hypotheses >= 2, "loss.mode_hypothesis", lo.mode_hypothesis,
         f"false with model.num_hypotheses = {m.num_hypotheses} (the mode needs K >= 2: itself and a "
         "winner-takes-all hypothesis)"),
        (o.lr > 0, "optim.lr", o.lr, "> 0"),
        (o.selection_lr > 0, "optim.selection_lr", o.selection_lr, "> 0"),
        (o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, ">= 0"),
        (o.grad_clip >= 0, "optim.grad_clip", o.grad_clip, ">= 0"),
        (0 < o.gamma <= 1, "optim.gamma", o.gamma, "in (0, 1]"),
        (all(x >= 1 for x in o.milestones), "optim.milestones", o.milestones, "epochs >= 1"),
        (d.synthetic_train >= 1, "data.synthetic_train", d.synthetic_train, ">= 1"),
        (d.synthetic_test >= 1, "data.synthetic_test", d.synthetic_test, ">= 1"),
        (32 <= d.synthetic_size <= MAX_IMAGE_SIZE, "data.synthetic_size", d.synthetic_size,
         f"from 32 to {MAX_IMAGE_SIZE}"),
        (d.synthetic_subframes >= 3 and d.synthetic_subframes % 2 == 1, "data.synthetic_subframes",
         d.synthetic_subframes, "odd and >= 3 (first, middle and last sub-frames are the labels)"),
        (d.synthetic_profile in SYNTHETIC_PROFILES, "data.synthetic_profile", d.synthetic_profile,
         f"one of {', '.join(SYNTHETIC_PROFILES)}"),
        (0 <= d.val_fraction < 1, "data.val_fraction", d.val_fraction, "in [0, 1)"),
        (d.max_train_samples >= 0, "data.max_train_samples", d.max_train_samples, ">= 0"),
        (d.max_eval_samples >= 0, "data.max_eval_samples", d.max_eval_samples, ">= 0"),
        (d.loader_workers >= -1, "data.loader_workers", d.loader_workers, ">= 0, or -1 (from the run's CPUs)"),
        (t.generation_epochs >= 1, "train.generation_epochs", t.generation_epochs, ">= 1"),
        (t.selection_epochs >= 0, "train.selection_epochs", t.selection_epochs, ">= 0"),
        (t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1"),
        (t.eval_batch_size >= 1, "train.eval_batch_size", t.eval_batch_size, ">= 1"),
        (DEVICE.fullmatch(t.device) is not None, "train.device", t.device, DEVICES),
        (t.log_every >= 1, "train.log_every", t.log_every, ">= 1"),
        (t.keep in KEEP, "train.keep", t.keep, f"one of {', '.join(KEEP)}"),
        (t.generation_objective in GENERATION_OBJECTIVES, "train.generation_objective", t.generation_objective,
         f"one of {', '.join(GENERATION_OBJECTIVES)}"),
        (t.precision in PRECISIONS, "train.precision", t.precision, f"one of {', '.join(PRECISIONS)}"),
        (FOLDER_NAME.fullmatch(se.experiment) is not None, "search.experiment", se.experiment,
         "a folder name: letters, digits, '.', '_', '-', starting with a letter or digit, at most 100 characters"),
        (se.num_samples >= 1, "search.num_samples", se.num_samples, ">= 1"),
        (se.grace_period >= 1, "search.grace_period", se.grace_period, ">= 1"),
        (se.scheduler in SCHEDULERS, "search.scheduler", se.scheduler, f"one of {', '.join(SCHEDULERS)}"),
        (se.round_trials >= 1, "search.round_trials", se.round_trials, ">= 1"),
        (se.sampler in SAMPLERS, "search.sampler", se.sampler, f"one of {', '.join(SAMPLERS)}"),
        (se.tpe_startup_trials >= 0, "search.tpe_startup_trials", se.tpe_startup_trials, ">= 0"),
        (se.reduction_factor >= 2, "search.reduction_factor", se.reduction_factor, ">= 2"),
        (se.num_workers >= 1, "search.num_workers", se.num_workers, ">= 1"),
        (se.cpus_per_worker > 0, "search.cpus_per_worker", se.cpus_per_worker, "> 0"),
        (se.gpus_per_worker >= 0, "search.gpus_per_worker", se.gpus_per_worker, ">= 0"),
        (se.max_failures >= 0, "search.max_failures", se.max_failures, ">= 0"),
        (se.final_generation_epochs >= 0, "search.final_generation_epochs", se.final_generation_epochs, ">= 0"),
        (se.final_selection_epochs >= 0, "search.final_selection_epochs", se.final_selection_epochs, ">= 0"),
        (se.final_max_train_samples >= 0, "search.final_max_train_samples", se.final_max_train_samples, ">= 0"),
        (se.max_concurrent_trials >= 0, "search.max_concurrent_trials", se.max_concurrent_trials, ">= 0"),
        (se.controller_failure_limit >= 0, "search.controller_failure_limit", se.controller_failure_limit, ">= 0"),
        (se.objectives in SEARCH_OBJECTIVES, "search.objectives", se.objectives,
         f"one of {', '.join(SEARCH_OBJECTIVES)}"),
        (parse_pick(se.pick) is not None, "search.pick", se.pick, PICKS),
        (se.objectives == "mpjpe_ms" or se.pick == "min_mpjpe", "search.pick", se.pick,
         "min_mpjpe with search.objectives='mpjpe' (one objective; search.objectives=mpjpe_ms picks from a Pareto "
         "front)"),
    ]
    for name, value in dataclasses.asdict(lo).items():
        if name not in ("diversity_alpha", "jrc_alpha", "winner", "selection_target", "mode_hypothesis"):
            checks.append((value >= 0, f"loss.{name}", value, "a loss weight >= 0"))
    for key, value in (("train.seed", t.seed), ("search.seed", se.seed), ("data.synthetic_seed", d.synthetic_seed)):
        checks.append((0 <= value < SEED_LIMIT, key, value, "0 <= seed < 2^32"))
    for ok, key, value, expected in checks:
        if not ok:
            raise ConfigError(f"{key}={shown(value)} is invalid: expected {expected}")
    return config
