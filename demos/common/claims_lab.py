"""The experiments of demos/claims.py: one function per claim of the chapter, each training the
models of one controlled comparison (same data, same encoder size, same optimizer and steps within
the comparison, several seeds where a difference is small) and returning its numbers.

Every function takes the lab `lab` (data, seeds, probe draws, budget; see claims.py) and returns
a dict of the measured numbers; claims.py turns them into a verdict with the rule it states, and
into the claim's figure. Nothing here chooses a setting after seeing a result: the settings are
the demos' defaults (demos/autoencoder.py, denoising.py, vae.py, simclr.py, triplet.py, moco.py,
mae.py, mlm.py), at the budgets written below.
"""
import math
import time

import numpy as np

import minienc
from minienc.data import BatchIterator, Tokenizer, contrastive_augment, stratified_split
from minienc.data.corrupt import STRENGTHS, corruption
from minienc.data.text import builtin_corpus, builtin_corpus_by_module
from minienc.eval import encode, few_shot_probe, knn_accuracy, linear_probe, pca_features, roc_auc
from minienc.eval.anomaly import autoencoder_scores, knn_scores, pca_scores, vae_scores
from minienc.eval.robustness import LinearProbe, relative_shift
from minienc.nn import VisionTransformer
from minienc.objectives import MAE, MaskedLanguageModel, Objective
from minienc.objectives.contrastive import MoCo, SimCLR, projection_head
from minienc.objectives.triplet import Triplet
from minienc.objectives.reconstruction import VAE, build_model, kl_weight_schedule
from minienc.optim import LARS, AdamW, Cosine, WarmupCosine
from minienc.optim.optimizer import set_hyperparameter

from .recipes import mlp_encoder


# ----- the one training loop, over any objective (minienc/objectives/protocol.py) -------------------

def fit(objective, arrays, steps, batch_size=128, lr=2e-3, weight_decay=0.0, seed=0, lars=False,
        warmup=1 / 20, start_lr=0.0, final_lr=0.0, final_weight_decay=None, attributes=None):
    """Train `objective` for `steps` steps on batches of `arrays` (AdamW, or LARS as the two-view
    recipe): the learning rate warmed up from `start_lr` over `warmup` of the run, then cosine
    to `final_lr`; with `final_weight_decay`, the weight decay cosine from `weight_decay` to it
    (I-JEPA's); `attributes` (name -> schedule) sets attributes of the objective before each
    step (a VAE's beta). Batches are never short (batch norm and negatives want full ones) and
    never larger than the data. Returns the last step's loss."""
    loader = BatchIterator(*arrays, batch_size=min(batch_size, len(arrays[0])), drop_last=True, seed=seed)
    groups = objective.param_groups(weight_decay)
    optimizer = LARS(groups, lr=lr, weight_decay=weight_decay) if lars else AdamW(groups, lr=lr)
    schedules = {"lr": WarmupCosine(lr, steps, int(warmup * steps), final=final_lr, start=start_lr)}
    if final_weight_decay is not None:
        schedules["weight_decay"] = Cosine(weight_decay, final_weight_decay, steps)
    step, loss, start = 0, float("nan"), time.perf_counter()
    while step < steps:
        for batch in loader:
            for key, schedule in schedules.items():
                set_hyperparameter(optimizer, key, schedule(step))
            for name, schedule in (attributes or {}).items():
                setattr(objective, name, schedule(step))
            terms = objective.loss(batch)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            objective.after_step(step / steps)
            step += 1
            if step == steps:
                loss = float(terms["loss"].data)
                break
    name = type(getattr(objective, "objective", objective)).__name__
    print(f"  {name}: {steps} steps of {loader.batch_size}, last loss {loss:.4g} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return loss


class Variant(Objective):
    """An objective seen through a change the lab makes: its images standardised before the
    loss and before the embedding (`loss_inputs`, `embed_inputs`), or a term of its loss left
    out (`without`: the objective's other terms train the encoder alone)."""

    def __init__(self, objective, loss_inputs=None, embed_inputs=None, without=None):
        self.objective, self.without = objective, without
        self.loss_inputs, self.embed_inputs = loss_inputs or (lambda x: x), embed_inputs or (lambda x: x)

    def loss(self, batch):
        terms = self.objective.loss(self.loss_inputs(batch))
        return {**terms, "loss": terms["loss"] - terms[self.without]} if self.without else terms

    def embed(self, x):
        return self.objective.embed(self.embed_inputs(x))

    def embed_module(self):
        return self.objective.embed_module()

    def param_groups(self, weight_decay=0.0):
        return self.objective.param_groups(weight_decay)

    def after_step(self, progress):
        self.objective.after_step(progress)


class EveryPatch(Objective):
    """An MAE's ViT and decoder as a plain autoencoder: every patch seen, every patch
    reconstructed and counted in the loss (what masking adds is then the only difference)."""

    def __init__(self, mae):
        self.mae = mae

    def loss(self, images):
        b, n = images.shape[0], self.mae.num_patches
        xp = minienc.backend.get_xp(images.data)
        order = xp.broadcast_to(xp.arange(n), (b, n))
        return {"loss": self.mae.masked_prediction(images, (order, order, xp.ones((b, n), images.dtype)))[0]}

    def embed(self, images):
        return self.mae.embed(images)

    def embed_module(self):
        return self.mae.embed_module()


def probes(embed, data, draws):
    """Linear probe, 5-shot probe and k-NN of `embed`'s test features (fractions); an objective
    is evaluated in eval mode (minienc.eval.encode)."""
    train, test = encode(embed, data.x_train), encode(embed, data.x_test)
    return {"linear": linear_probe(train, data.y_train, test, data.y_test),
            "fewshot": few_shot_probe(train, data.y_train, test, data.y_test, draws=draws, seed=0),
            "knn": knn_accuracy(train, data.y_train, test, data.y_test)}


def seeded(seed, build):
    minienc.manual_seed(seed)
    return build()


def reconstruction_model(lab, kind, latent_dim, **options):
    """The reconstruction demos' MLP model (256-128 hidden, Bernoulli decoder)."""
    return build_model(kind, lab.data.image_shape, latent_dim, **options)


def train_reconstruction(lab, model, seed, steps, x=None, kl_warmup=0.25):
    """demos/autoencoder.py's training (Adam at 2e-3, batches of 128); a VAE's beta ramps from 0
    to 1 over the first `kl_warmup` of the run (demos/vae.py)."""
    steps = lab.steps(steps)
    warm = {"beta": kl_weight_schedule(1.0, int(kl_warmup * steps))} if isinstance(model, VAE) else None
    fit(model, (lab.data.x_train if x is None else x,), steps, lr=2e-3, seed=seed, attributes=warm)
    return model


# ----- 1. autoencoders compress: beside PCA at the same latent size ---------------------------------

def squared_error(reconstruction, images):
    diff = np.asarray(minienc.backend.to_host(reconstruction), np.float64) - images
    return float((diff.reshape(len(diff), -1) ** 2).sum(axis=1).mean())


def autoencoder(lab, sizes=(2, 4, 8, 16, 32), steps=3000):
    data = lab.data
    rows = []
    for size in lab.pick(sizes):
        train_pca, test_pca = pca_features(data.x_train, data.x_test, size)
        pca = {"recon": float(pca_scores(data.x_train, data.x_test, size).mean()),
               "linear": linear_probe(train_pca, data.y_train, test_pca, data.y_test),
               "fewshot": few_shot_probe(train_pca, data.y_train, test_pca, data.y_test,
                                         draws=lab.draws, seed=0)}
        ae = []
        for seed in lab.seeds:
            model = train_reconstruction(lab, seeded(seed, lambda: reconstruction_model(
                lab, "autoencoder", size)), seed, steps)
            with minienc.no_grad():
                recon = squared_error(model.reconstruct(minienc.tensor(data.x_test)).data, data.x_test)
            ae.append({"recon": recon, **probes(model, data, lab.draws)})
        rows.append({"size": size, "pca": pca, "ae": ae})
    return {"sizes": rows, "steps": lab.steps(steps)}


# ----- 2. denoising autoencoders are more robust ------------------------------------------------------

DENOISERS = {"AE": {}, "DAE-noise": {"noise": "gaussian", "level": 0.3},
             "DAE-mask": {"noise": "mask", "level": 0.25}}   # demos/denoising.py's levels


def robustness_curves(embed, data, kinds, seed=0):
    """{kind: [probe accuracy at each of STRENGTHS[kind]]}, the probe fit on the clean train
    images' embeddings; the corrupted test images are the same for every encoder (`seed`)."""
    probe = LinearProbe.fit(encode(embed, data.x_train), data.y_train)
    return {kind: [probe.accuracy(encode(embed, corruption(kind, s)(data.x_test, rng=seed)), data.y_test)
                   for s in STRENGTHS[kind]] for kind in kinds}


def denoising(lab, latent_dim=16, steps=3000):
    curves = {name: [] for name in DENOISERS}
    for name, options in DENOISERS.items():
        kind = "denoising" if options else "autoencoder"
        for seed in lab.seeds:
            model = train_reconstruction(lab, seeded(seed, lambda: reconstruction_model(
                lab, kind, latent_dim, **options)), seed, steps)
            curves[name].append(robustness_curves(model, lab.data, ("noise", "mask")))
    return {"curves": curves, "strengths": {k: STRENGTHS[k] for k in ("noise", "mask")},
            "steps": lab.steps(steps)}


# ----- 3. VAEs detect anomalies ---------------------------------------------------------------------

def anomaly_models(lab, normal, seed, steps, latent_dim=16):
    """A VAE and a plain autoencoder of the same size, trained on the `normal` images alone."""
    def build(kind):
        return seeded(seed, lambda: reconstruction_model(lab, kind, latent_dim))
    return (train_reconstruction(lab, build("vae"), seed, steps, x=normal),
            train_reconstruction(lab, build("autoencoder"), seed, steps, x=normal))


def anomaly_aurocs(vae_model, ae_model, normal, test, is_anomaly):
    """AUROC of every anomaly score (minienc.eval.anomaly) of the `test` images."""
    dim = vae_model.latent_dim
    terms = vae_scores(vae_model, test)
    scores = {"-ELBO (VAE)": terms["neg_elbo"], "reconstruction (VAE)": terms["reconstruction"],
              "reconstruction (AE)": autoencoder_scores(ae_model, test),
              f"PCA-{dim} residual": pca_scores(normal, test, dim),
              "5-NN distance (pixels)": knn_scores(normal, test, k=5)}
    return {name: roc_auc(score, is_anomaly) for name, score in scores.items()}


OUT_OF_DISTRIBUTION = {   # anomalies made from the test images themselves: the same digits, changed
    "noisy (std 0.3)": lambda x: corruption("noise", 0.3)(x, rng=1),
    "upside down": lambda x: np.ascontiguousarray(x[:, :, ::-1]),
    "pixels shuffled": lambda x: x.reshape(len(x), -1)[:, np.random.default_rng(1).permutation(
        x[0].size)].reshape(x.shape),
}


def latent_picture(vae_model, images):
    """The aggregate posterior (z ~ q(z|x) over the test images, all dimensions pooled) as a
    density on a grid, beside the prior's, and the mean KL of each latent dimension."""
    with minienc.no_grad():
        mu, logvar = (minienc.backend.to_host(t.data).astype(np.float64)
                      for t in vae_model.posterior(minienc.tensor(images)))
    z = mu + np.exp(0.5 * logvar) * np.random.default_rng(0).standard_normal(mu.shape)
    edges = np.linspace(-4, 4, 41)
    density, _ = np.histogram(z.ravel(), bins=edges, density=True)
    centres = (edges[:-1] + edges[1:]) / 2
    kl = (0.5 * (mu ** 2 + np.exp(logvar) - 1.0 - logvar)).mean(axis=0)
    return {"centres": centres.tolist(), "aggregate": density.tolist(),
            "prior": (np.exp(-centres ** 2 / 2) / math.sqrt(2 * math.pi)).tolist(),
            "kl_per_dim": sorted(kl.tolist(), reverse=True)}


def vae(lab, steps=3000):
    data, seed = lab.data, lab.seeds[0]
    held_out = {}
    for digit in lab.pick(tuple(range(data.num_classes))):
        normal = data.x_train[data.y_train != digit]
        held_out[digit] = anomaly_aurocs(*anomaly_models(lab, normal, seed, steps), normal,
                                         data.x_test, data.y_test == digit)
    models = anomaly_models(lab, data.x_train, seed, steps)   # every digit is normal now
    ood = {}
    for task, change in OUT_OF_DISTRIBUTION.items():
        test = np.concatenate([data.x_test, change(data.x_test)]).astype(np.float32)
        is_anomaly = np.r_[np.zeros(len(data.x_test)), np.ones(len(data.x_test))]
        ood[task] = anomaly_aurocs(*models, data.x_train, test, is_anomaly)
    return {"held_out": held_out, "ood": ood, "latent": latent_picture(models[0], data.x_test),
            "steps": lab.steps(steps)}


# ----- 4. InfoNCE's many negatives against the triplet loss -------------------------------------------

def two_view_objective(lab, method, queue=None):
    """SimCLR (NT-Xent, temperature 0.5), the triplet loss (batch-hard, margin 0.5) or MoCo v2 (a
    queue of `queue` keys, temperature 0.2), each with the same encoder and augmentations."""
    augment = contrastive_augment(crop_scale=(0.5, 1.0), degrees=15.0, shear=10.0, noise=0.05,
                                  erase_p=0.3)    # common/recipes.py two_view_augment, for digits
    encoder = mlp_encoder(lab.data, 64)   # the two-view recipe's MLP 512-512 with batch norm
    if method == "InfoNCE":
        return SimCLR(encoder, projection_head(64, 256, 64), augment, temperature=0.5)
    if method == "triplet":
        return Triplet(encoder, augment, miner="batch_hard", margin=0.5)
    return MoCo(encoder, projection_head(64, 256, 64, batch_norm=False), augment, queue_size=queue,
                momentum=0.99, temperature=0.2, bn_groups=4)


def train_two_view(lab, method, batch_size, seed, steps, queue=None):
    objective = seeded(seed, lambda: two_view_objective(lab, method, queue))
    # LARS with SimCLR's linear scaling, base lr 1.0 (demos/simclr.py)
    fit(objective, (lab.data.x_train,), lab.steps(steps), batch_size=batch_size,
        lr=1.0 * batch_size / 256, weight_decay=1e-6, seed=seed, lars=True)
    return probes(objective, lab.data, lab.draws)


def negatives(lab, batch_sizes=(16, 64, 256, 512), queues=(32, 128, 512, 1024), moco_batch=32,
              steps=300):
    batch_sizes = [b for b in lab.pick(batch_sizes) if b <= len(lab.data.x_train)]
    queues = [q for q in lab.pick(queues) if q < len(lab.data.x_train)]
    by_batch = {method: {b: [train_two_view(lab, method, b, seed, steps) for seed in lab.seeds]
                         for b in batch_sizes} for method in ("triplet", "InfoNCE")}
    by_queue = {q: [train_two_view(lab, "MoCo", moco_batch, seed, steps, queue=q) for seed in lab.seeds]
                for q in queues}
    return {"by_batch": by_batch, "by_queue": by_queue, "moco_batch": moco_batch,
            "steps": lab.steps(steps)}


# ----- 5. masked modeling gives richer embeddings -----------------------------------------------------

def patch_size(lab):
    """2x2 patches on small images (the 8x8 digits: a 4x4 grid, as demos/mae.py and jepa.py),
    4x4 on larger ones (the 32x32 canvas, 28x28 MNIST), 1x1 where neither divides the size."""
    h = lab.data.image_shape[1]
    wanted = 2 if h <= 16 else 4
    return wanted if h % wanted == 0 else 1


def vit_mae(lab, mask_ratio):
    """demos/mae.py's model (a 64-d, 4-block ViT, decoder 32-d x 2, norm-pix targets);
    mask_ratio 0: the same ViT and decoder as a plain autoencoder (EveryPatch)."""
    c, h, _ = lab.data.image_shape
    patch = patch_size(lab)
    model = MAE(image_size=h, patch_size=patch, in_channels=c, dim=64, depth=4, num_heads=4,
                decoder_dim=32, decoder_depth=2, mask_ratio=mask_ratio or 0.75,
                norm_pix_loss=patch * patch * c > 1)
    return model if mask_ratio else EveryPatch(model)


def train_vit(lab, mask_ratio, seed, steps):
    objective = seeded(seed, lambda: vit_mae(lab, mask_ratio))
    fit(objective, (lab.data.x_train,), lab.steps(steps), lr=2e-3, weight_decay=0.05, seed=seed)
    return objective


def text_task(modules=10, per_module=None, test_fraction=0.25, seed=0):
    """The built-in corpus with a real label (the stdlib module of each sentence): a stratified
    split of the labelled sentences; the MLM trains on every other sentence of the corpus too
    (never on a labelled test sentence)."""
    sentences, labels, names = builtin_corpus_by_module(modules, per_module)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    held_out = {sentences[i] for i in test_idx}
    unlabelled = [s for s in builtin_corpus() if s not in held_out]
    return {"train": [sentences[i] for i in train_idx], "y_train": labels[train_idx],
            "test": [sentences[i] for i in test_idx], "y_test": labels[test_idx],
            "unlabelled": unlabelled, "modules": names}


def bag_of_words(tok, sentences):
    """Binary bag of words over the tokenizer's vocabulary (specials dropped)."""
    ids = tok.encode_batch(sentences, 64, add_cls=False)
    bags = np.zeros((len(sentences), len(tok)), np.float32)
    bags[np.arange(len(ids))[:, None], ids] = 1.0
    bags[:, list(tok.special_ids)] = 0.0
    return bags


def text_probe(train, y_train, test, y_test):
    return {"linear": linear_probe(train, y_train, test, y_test), "knn": knn_accuracy(train, y_train, test, y_test)}


def train_mlm(lab, task, tok, mask_prob, seed, steps, max_len=32):
    """demos/mlm.py's model at half the width (64-d, 2 blocks, dropout 0.1), AdamW 1e-3, wd 0.01,
    batches of 64; `mask_prob` of the words chosen (BERT's 80/10/10 corruption)."""
    ids = tok.encode_batch(task["unlabelled"], max_len, add_sep=True)
    model = seeded(seed, lambda: MaskedLanguageModel(
        len(tok), max_len=max_len, dim=64, depth=2, num_heads=4, pad_id=tok.pad_id, dropout=0.1,
        special_ids=tok.special_ids, mask_id=tok.mask_id, mask_prob=mask_prob))
    if steps:
        fit(model, (ids,), lab.steps(steps), batch_size=64, lr=1e-3, weight_decay=0.01, seed=seed)
    model.eval()
    embed = [encode(model.embed, tok.encode_batch(task[part], max_len, add_sep=True))
             for part in ("train", "test")]
    return text_probe(embed[0], task["y_train"], embed[1], task["y_test"])


def masking(lab, ratios=(0.25, 0.5, 0.75, 0.9), steps=500, text_rates=(0.15, 0.4), text_steps=800):
    images = {ratio: [probes(train_vit(lab, ratio, seed, steps), lab.data, lab.draws)
                      for seed in lab.seeds] for ratio in (0.0, *lab.pick(ratios))}
    task = text_task(**(dict(modules=4, per_module=60) if lab.quick else {}))
    tok = Tokenizer.fit(task["unlabelled"], min_freq=2)
    text = {"bag of words": [text_probe(bag_of_words(tok, task["train"]), task["y_train"],
                                        bag_of_words(tok, task["test"]), task["y_test"])],
            "MLM at random init": [train_mlm(lab, task, tok, 0.15, lab.seeds[0], 0)]}
    for rate in lab.pick(text_rates):
        text[f"MLM, {rate:.0%} masked"] = [train_mlm(lab, task, tok, rate, seed, text_steps)
                                           for seed in lab.seeds]
    return {"images": images, "text": text, "modules": task["modules"],
            "text_sizes": [len(task["train"]), len(task["test"])], "steps": lab.steps(steps),
            "text_steps": lab.steps(text_steps)}


# ----- 6. JEPA: embeddings, not pixels; and the predictor's part ---------------------------------------

LOW_LEVEL = (("noise", 0.2), ("shift", 1), ("contrast", 0.5), ("stroke", 1), ("stroke", -1))


def vit(lab):
    """demos/jepa.py's ViT: 64-d, 4 blocks, xavier init, on `patch_size` patches."""
    c, h, _ = lab.data.image_shape
    return VisionTransformer(image_size=h, patch_size=patch_size(lab), in_channels=c, dim=64,
                             depth=4, num_heads=4, weight_init="xavier")


def vit_objective(lab, name):
    """The objectives compared on one ViT, all on standardised pixels (I-JEPA's Normalize):
    "JEPA" (demos/jepa.py's MaskedViewsJEPA: a predictor between two augmented, half-masked
    views, LeJEPA as the guard), "JEPA without predictor" (the same objective with its
    prediction term left out: LeJEPA between the two masked views alone), "MAE" (75% of the
    patches hidden, their pixels predicted) and "AE" (the MAE's ViT and decoder, nothing hidden)."""
    from minienc.objectives.jepa import MaskedViewsJEPA
    standardize, augment = lab.data.standardizer(), contrastive_augment()
    encoder = vit(lab)
    if name.startswith("JEPA"):
        # its two views are standardised inside, after their augmentation
        jepa = MaskedViewsJEPA(encoder, predictor_dim=32, predictor_depth=4,
                               augment=lambda x: standardize(augment(x)))
        return Variant(jepa, embed_inputs=standardize,
                       without="prediction" if name == "JEPA without predictor" else None)
    mae = MAE(encoder=encoder, decoder_dim=32, decoder_depth=4)
    return Variant(mae if name == "MAE" else EveryPatch(mae), standardize, standardize)


def low_level(lab, encoders, seed=0):
    """For every encoder (name -> an objective or a function of images) and perturbation of LOW_LEVEL: how far the test
    embeddings move (relative_shift) and the probe's accuracy on the perturbed test images (the
    probe fit on clean train images)."""
    data = lab.data
    out = {}
    for name, embed in encoders.items():
        clean = encode(embed, data.x_test)
        probe = LinearProbe.fit(encode(embed, data.x_train), data.y_train)
        row = {"clean": probe.accuracy(clean, data.y_test)}
        for kind, strength in LOW_LEVEL:
            moved = encode(embed, corruption(kind, strength)(data.x_test, rng=seed))
            row[f"{kind} {strength:+g}" if kind == "stroke" else f"{kind} {strength:g}"] = {
                "shift": relative_shift(clean, moved), "accuracy": probe.accuracy(moved, data.y_test)}
        out[name] = row
    return out


def jepa(lab, steps=600, names=("JEPA", "JEPA without predictor", "MAE", "AE")):
    runs = {name: [] for name in names}
    perturbations = []
    for seed in lab.seeds:
        trained = {}
        for name in names:
            objective = seeded(seed, lambda: vit_objective(lab, name))
            # demos/jepa.py's optimizer for all four: AdamW at 2e-3, warmed up from lr / 5 over
            # 40/300 of the run, cosine to 1e-6; weight decay cosine from 0.04 to 0.4
            fit(objective, (lab.data.x_train,), lab.steps(steps), lr=2e-3, weight_decay=0.04, seed=seed,
                warmup=40 / 300, start_lr=2e-3 / 5, final_lr=1e-6, final_weight_decay=0.4)
            runs[name].append(probes(objective, lab.data, lab.draws))
            trained[name] = objective
        trained["raw pixels"] = lambda x: x.reshape(x.shape[0], -1)
        perturbations.append(low_level(lab, trained))
    return {"runs": runs, "low_level": perturbations, "steps": lab.steps(steps)}
