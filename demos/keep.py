"""What the embeddings keep: a small decoder learns to redraw each digit from a FROZEN encoder's
embedding, so what it can redraw is what the embedding kept.

    python demos/keep.py                  # JEPA, LeJEPA, MAE, SimCLR on one ViT (~8 CPU min)
    python demos/keep.py --steps 300      # shorter pre-training

Pre-trains the same ViT (64-d x 4 blocks on 2x2 patches of the 8x8 digits, the same random
init) with four objectives -- JEPA with a predictor and SIGReg (demos/jepa.py's default), LeJEPA (two
augmented views), MAE (pixels of hidden patches), SimCLR (NT-Xent between two augmented views)
-- then freezes each, embeds the train split (tokens mean-pooled, 64 numbers per image) and fits
one small MLP decoder per encoder (64 -> 256 -> 256 -> 64 pixels, squared error, the same
steps for all) from embeddings to images. Its reconstructions of the same held-out digits, side
by side, show what each objective keeps: MAE's embeddings are trained to hold pixels, the
joint-embedding ones only what the views or the hidden blocks share. The random-init ViT and a
PCA to 64 numbers of the raw pixels (an exact code: every pixel is kept) are the references.
Writes runs/keep/: keep.png, keep.json (= results.json: the test error of each decoder) and
each pre-training's Trainer run in a folder of its own. A folder holding a run is refused:
--resume continues it, --overwrite starts it again.
"""
import argparse
import copy
import json
import os
import time

from common import add_threads_flag, start_run

import minienc
from minienc import backend, nn
from minienc.data import BatchIterator, contrastive_augment, load_dataset
from minienc.eval import encode, fit_pca, plot_image_grid
from minienc.objectives.contrastive import SimCLR, projection_head
from minienc.objectives.jepa_study import DEFAULT_SETTINGS, StudyJEPA, augmented_views, halves
from minienc.objectives.lejepa import LeJEPA
from minienc.objectives.masked_image import MAE
from minienc.optim import Adam, AdamW, WarmupCosine, param_groups_without_decay
from minienc.train import Trainer


class Pooled(nn.Module):
    """A ViT's tokens mean-pooled: the (B, D) features SimCLR's head and loss expect."""

    def __init__(self, vit):
        self.vit = vit

    def forward(self, images):
        return self.vit(images).mean(axis=1)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="pre-training steps per encoder")
    parser.add_argument("--decoder-steps", type=int, default=1500)
    parser.add_argument("--only", default="jepa,lejepa,mae,simclr")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None, help="output folder (default: runs/keep)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (finished pre-trainings are read back)")
    parser.add_argument("--overwrite", action="store_true", help="start the run in --out again")
    add_threads_flag(parser)
    return parser.parse_args()


def pretrain(name, vit, data, args, standardize):
    """Train `vit` in place with objective `name` for --steps steps (a Trainer run in
    <out>/<name>: --resume continues it)."""
    augment = contrastive_augment()
    if name == "jepa":   # demos/jepa.py's default (MaskedViewsJEPA), as the 3.KEEP run built it
        model = StudyJEPA(vit, predictor_dim=32, predictor_depth=4, masks=halves(vit.num_patches),
                          views=augmented_views(augment, standardize, first="context"),
                          **DEFAULT_SETTINGS)
        params = model.param_groups(0.04)

        def step(x):   # (its masks drawn before its views: the order of the 3.KEEP run)
            context, target = model.masks(x.shape[0])
            images, target_images = model.views(x)
            return model.terms(images, context, target, target_images)
    elif name == "lejepa":
        model = LeJEPA(vit, proj_dim=32, hidden=256, lam=0.02, num_views=2,
                       augment=lambda x: standardize(augment(x)))
        params, step = model.param_groups(0.05), model
    elif name == "mae":
        model = MAE(encoder=vit, decoder_dim=32, decoder_depth=2, norm_pix_loss=True)
        params = param_groups_without_decay(model, 0.05)

        def step(x):
            return model.loss(standardize(x))
    else:
        model = SimCLR(Pooled(vit), projection_head(vit.dim, 256, 64), temperature=0.5)
        params = param_groups_without_decay(model, 0.05)

        def step(x):
            return model.loss_of_views(standardize(augment(x)), standardize(augment(x)))
    opt = AdamW(params, lr=args.lr)
    loader = BatchIterator(data.x_train, batch_size=args.batch_size, drop_last=True, seed=args.seed)
    Trainer(step, opt, models=None if step is model else {name: model}, log_every=args.steps,
            progress=False,
            schedules={"lr": WarmupCosine(args.lr, args.steps, args.steps // 10, final=1e-6)},
            out_dir=os.path.join(args.out, name)
            ).fit(loader, steps=args.steps, resume=args.resume, overwrite=args.overwrite)


def fit_decoder(z_train, x_train, z_test, steps, seed):
    """An MLP from standardised embeddings to pixels, fitted by full-batch Adam on the train
    split; returns the test reconstructions (N, 1, 8, 8)."""
    mean, std = z_train.mean(0), z_train.std(0) + 1e-6
    z_train, z_test = (z_train - mean) / std, (z_test - mean) / std
    minienc.manual_seed(seed)   # every encoder's decoder starts from the same weights
    decoder = nn.Sequential(nn.Linear(z_train.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                            nn.Linear(256, x_train[0].size))
    opt = Adam(decoder.parameters(), lr=1e-3)
    target = minienc.tensor(x_train.reshape(len(x_train), -1))
    inputs = minienc.tensor(z_train)
    for _ in range(steps):
        opt.zero_grad()
        loss = minienc.mse_loss(decoder(inputs), target)
        loss.backward()
        opt.step()
    with minienc.no_grad():
        out = decoder(minienc.tensor(z_test)).data
    return out.reshape(len(z_test), *x_train.shape[1:])


def main():
    args = parse_args()
    start_run(args)   # seed, threads, device, and a folder holding a run refused unless asked
    data = load_dataset("digits", seed=args.seed)
    standardize = data.standardizer()

    vit = nn.VisionTransformer(image_size=8, patch_size=2, dim=args.dim, depth=args.depth,
                               num_heads=4, weight_init="xavier")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    labels = {"jepa": "JEPA", "lejepa": "LeJEPA", "mae": "MAE", "simclr": "SimCLR"}
    np = backend.numpy
    show = np.array([int(np.flatnonzero(data.y_test == k)[i]) for i in range(2) for k in range(10)])
    x_train, x_test = backend.to_host(data.x_train), backend.to_host(data.x_test)
    rows, titles, errors = [x_test[show]], ["original"], {}

    def add(label, z_train, z_test):
        recon = fit_decoder(backend.to_host(z_train), x_train, backend.to_host(z_test),
                            args.decoder_steps, args.seed)
        errors[label] = float(((recon - x_test) ** 2).mean())
        rows.append(recon[show].clip(0, 1))
        titles.append(f"{label}\nMSE {errors[label]:.4f}")
        print(f"{label:<16} decoder test MSE {errors[label]:.4f}", flush=True)

    for name in names:
        start = time.process_time()
        encoder = copy.deepcopy(vit)                 # the same random init for every objective
        pretrain(name, encoder, data, args, standardize)

        def embed(x, encoder=encoder):
            return encoder(standardize(x)).mean(axis=1)
        print(f"{labels[name]}: {args.steps} steps in {time.process_time() - start:.0f} s CPU")
        add(labels[name], encode(embed, data.x_train), encode(embed, data.x_test))
    add("random init", encode(lambda x: vit(standardize(x)).mean(axis=1), data.x_train),
        encode(lambda x: vit(standardize(x)).mean(axis=1), data.x_test))
    flat_train, flat_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    centre, components = fit_pca(flat_train, min(args.dim, flat_train.shape[1]))
    add(f"PCA-{components.shape[1]} pixels", (flat_train - centre) @ components,
        (flat_test - centre) @ components)
    path = plot_image_grid(rows, os.path.join(args.out, "keep.png"), row_titles=titles,
                           title=f"What the embeddings keep: an MLP decoder redraws held-out digits "
                                 f"from each frozen {args.dim}-d embedding")
    for name in ("keep.json", "results.json"):   # results.json: the run is finished
        with open(os.path.join(args.out, name), "w") as f:
            json.dump({"decoder_test_mse": errors, "steps": args.steps}, f, indent=1)
    print("saved", path)


if __name__ == "__main__":
    main()
