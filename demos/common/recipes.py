"""The recipes several demos share, so that their rows compare: the two-view recipe (SimCLR,
MoCo, triplet: an MLP encoder, two augmented views, LARS at base lr * batch / 256 with warmup and
cosine), the autoencoder recipe (autoencoder, denoising, VAE) and the joint-embedding recipe (the
two-view recipe without negatives, with collapse gauges: BYOL, SimSiam, VICReg, Barlow Twins,
DINO)."""
import math
import os
import sys

from minienc import data as D
from minienc.eval import CollapseGauges, plot_curves
from minienc.nn import Flatten, MLPEncoder, Sequential, SyncBatchNorm
from minienc.objectives.reconstruction import build_model
from minienc.optim import LARS, WarmupCosine
from minienc.progress import MetricsFile

from .runs import demo_name, run_options, save_grid, total_steps


# ----- the two-view recipe: SimCLR, MoCo and triplet share it, so their rows compare ---------------

def mlp_encoder(data, latent_dim, hidden=(512, 512)):
    """Flatten, then an MLP with batch norm, sized from the data's images (C * H * W inputs)."""
    return Sequential(Flatten(), MLPEncoder(math.prod(data.image_shape), hidden, latent_dim,
                                            batch_norm=True))


def two_view_augment(args, data):
    """Two-view augmentations. Colour images (CIFAR-10): SimCLR's CIFAR recipe (crop, flip,
    colour jitter at strength 0.5, grayscale; minienc.data.simclr_augment) with crops down to
    --crop of the area (SimCLR: 0.08). Grey digits: minienc.data.contrastive_augment (a resized
    crop, a small rotation, brightness/contrast jitter, noise and an erased patch; no flips: a
    mirrored 2 is not a 2), with crops down to --crop, --noise, a 15 degree rotation, a 10
    degree shear and erasing at p 0.3."""
    channels, size, _ = data.image_shape
    if channels == 3:
        return D.simclr_augment(image_size=size, strength=0.5, crop_scale=(args.crop, 1.0))
    return D.contrastive_augment(crop_scale=(args.crop, 1.0), degrees=15.0, shear=10.0,
                                 noise=args.noise, erase_p=0.3)


def two_view_batches(args, data, name, model, labels=False, sync_batch_norm=True, augment=None):
    """The recipe's batches: full batches of the train images (and labels) and the run's steps.
    Saves the view pairs first (views.png, drawn with `augment`, default the model's). With
    --distributed and `sync_batch_norm`, every batch norm in `model` normalises over the global
    batch (SimCLR's global BN; MoCo keeps its own per process)."""
    if getattr(args, "distributed", False) and sync_batch_norm:
        SyncBatchNorm.convert(model)
    augment = augment or model.augment
    save_grid(args, [data.x_test[:12], augment(data.x_test[:12]), augment(data.x_test[:12])],
              ["original", "view 1", "view 2"], "views.png",
              f"{name}: positive pairs (two random views of each image)")
    arrays = (data.x_train, data.y_train) if labels else (data.x_train,)
    loader = D.BatchIterator(*arrays, batch_size=args.batch_size, drop_last=True, seed=args.seed,
                             device=args.device)
    if len(loader) == 0:
        sys.exit(f"{demo_name()}: --batch-size {args.batch_size} is larger than the "
                 f"{len(data.x_train)} train images (batches are never short: batch norm and the "
                 f"negatives want full ones)")
    return loader, total_steps(args, loader)


def recipe_lr(args):
    """The recipe's peak learning rate, scaled as SimCLR: base --lr * batch / 256."""
    return args.lr * args.batch_size / 256


def recipe_lars(args, objective):
    """The recipe's optimizer: LARS over the objective's parameter groups (biases and norms
    without weight decay or adaptation) at recipe_lr, with --weight-decay."""
    return LARS(objective.param_groups(args.weight_decay), lr=recipe_lr(args),
                weight_decay=args.weight_decay)


def recipe_options(args, data, objective, loader, steps, **schedules):
    """The recipe's Trainer options: the learning rate's warmup over --warmup-steps and cosine
    to 0 (more `schedules` beside it), a log line per epoch, and run_options."""
    lr = WarmupCosine(recipe_lr(args), steps, warmup_steps=min(args.warmup_steps, steps))
    return run_options(args, data, objective.embed, schedules={"lr": lr, **schedules},
                       log_every=len(loader))


# ----- the autoencoder recipe: autoencoder, denoising and VAE share it -----------------------------

def build_reconstruction(args, data, kind, **options):
    """The model to train (sized from the data's images) and a copy of its initial weights (the
    random-encoder baseline)."""
    def build():
        return build_model(kind, data.image_shape, args.latent_dim, args.arch, args.likelihood,
                           args.sigma, **options).to(args.device)
    model, initial = build(), build()
    initial.load_state_dict(model.state_dict())
    print(f"{kind} ({args.arch}, latent {args.latent_dim}): {model.num_parameters():,} parameters")
    return model, initial


def reconstruction_batches(args, data):
    """Batches of the train images (the last one may be short) and the run's steps."""
    loader = D.BatchIterator(data.x_train, batch_size=args.batch_size, seed=args.seed, device=args.device)
    return loader, total_steps(args, loader)


def reconstruction_options(args, data, objective, loader, steps, **schedules):
    """The autoencoders' Trainer options: the learning rate's warmup over 5% of the run and
    cosine to 0 (more `schedules` beside it: the VAE's beta), a log line per epoch, and
    run_options."""
    lr = WarmupCosine(args.lr, steps, warmup_steps=steps // 20)
    return run_options(args, data, objective.embed, schedules={"lr": lr, **schedules},
                       log_every=len(loader))


def say_loss(args, trainer):
    """The loss of the first epoch and of the last."""
    logged = [r for r in trainer.records if "loss" in r]   # (an evaluation at step 0 has none)
    print(f"loss: {logged[0]['loss']:.2f} in the first epoch -> {logged[-1]['loss']:.2f} in the "
          f"last (nats per image; curve in {args.out}/loss.png)")
    return logged


# ----- the joint-embedding recipe: BYOL, SimSiam, VICReg, Barlow Twins, DINO ----------------------
# The two-view recipe without negatives: nothing in the loss itself forbids mapping every image to
# one point, so collapse gauges over training show whether each method's own remedy is working.

def collapse_gauges(args, data, **gauged):
    """minienc.eval.CollapseGauges of `gauged` (name -> encoder: the representation, and the
    output the loss sees, where collapse shows first) on the train images, recorded at step 0;
    a Trainer callback that records them every --monitor-every steps."""
    gauges = CollapseGauges(data.x_train, args.monitor_every, **gauged)
    gauges.record(0)
    return gauges


def save_gauges(args, name, gauges, terms=(), log_scale=("loss",)):
    """curves.png (the loss and the logged `terms` over training), gauges.png and gauges.json."""
    curves = MetricsFile(os.path.join(args.out, "metrics.jsonl")).curves(("loss", *terms))
    print("saved", plot_curves(curves, os.path.join(args.out, "curves.png"),
                               title=f"{name}: loss over training", log_scale=log_scale))
    print("saved", gauges.save(args.out, f"{name}: collapse gauges on the train images (eval mode)"))
