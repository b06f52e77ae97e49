"""Reconstruction objectives: the autoencoder, the denoising autoencoder and the variational
autoencoder. Each learns an encoder f by asking a decoder g to rebuild the input from f's output.

Notation: a batch of B examples x, each with D = C*H*W values in [0, 1]; J latent dimensions.
Every loss below is PER EXAMPLE: summed over the D values (and the J latent dimensions) of one
example, then averaged over the B examples of the batch. The numbers are nats per image: they do
not change with the batch size, and they grow with the image size.

Reconstruction term, -log p(x | decoder output), for two decoders:
    bernoulli  each value a coin with probability sigmoid(l), l the decoder's output (logits):
               R = (1/B) sum_b sum_d [max(l,0) - l x + log(1 + e^-|l|)]   (BCE with logits; grey
               levels act as soft targets, as Kingma & Welling did on MNIST)
    gaussian   each value N(x_hat, sigma^2) with a fixed sigma, x_hat the decoder's output:
               R = (1/B) sum_b sum_d (x_hat - x)^2 / (2 sigma^2)   (the squared error: the constant
               D log(sigma sqrt(2 pi)) is dropped; sigma = 1 gives half the summed squared error)

1. Autoencoder (Rumelhart et al. 1986; Hinton & Salakhutdinov 2006)
       z = f(x),  loss = R(g(z), x).                              The embedding is z.

2. Denoising autoencoder (Vincent et al. 2008; 2010, section 4.2)
       x~ ~ q(x~ | x),  loss = R(g(f(x~)), x)   -- the target is the CLEAN x.
   Corruptions q, at a chosen level:
       gaussian         x~ = x + sigma eps,  eps ~ N(0, I)                       (level = sigma)
       mask             exactly round(nu D) of each example's values, chosen at random, set to 0
       salt_and_pepper  the same chosen values set to 0 or 1 by a fair coin     (level = nu)
   The embedding is f(x) of the clean input.

3. Variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes")
       (mu, log sigma^2) = f(x):  q(z | x) = N(mu, diag sigma^2)
       z = mu + exp(0.5 log sigma^2) * eps,  eps ~ N(0, I)    (reparameterisation; one z per x)
       KL(q(z|x) || N(0, I)) = 0.5 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)   (appendix B),
           summed over the J latent dimensions, averaged over the batch
       loss = R(g(z), x) + beta KL.  With beta = 1 this is the negative ELBO per example (an upper
       bound on -log p(x)); beta != 1 is the beta-VAE of Higgins et al. 2017. KL warm-up (Bowman et
       al. 2016, Sonderby et al. 2016) ramps beta from 0, as a schedule of the Trainer.
   The embedding is mu. New images: decode z ~ N(0, I); interpolation: decode points on the line
   between two inputs' mu.
"""
from .. import backend, checks
from ..data.augment import GaussianNoise, MaskingNoise, SaltAndPepperNoise
from ..nn import ConvDecoder, ConvEncoder, Flatten, MLPEncoder, Sequential, Unflatten
from ..ops import binary_cross_entropy_with_logits, mse_loss, sigmoid
from ..optim import Constant, LinearSchedule
from ..engine import as_array, as_tensor, no_grad
from .protocol import Objective

LIKELIHOODS = ("bernoulli", "gaussian")
ARCHS = ("mlp", "conv")


# ----- the reconstruction term ---------------------------------------------------------------------

def _check_likelihood(name, likelihood):
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"{name}: likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def reconstruction_loss(output, target, likelihood="bernoulli", sigma=1.0):
    """-log p(target | output), summed over each example's values, averaged over the batch.
    output: the decoder's raw output (logits for "bernoulli", means for "gaussian"), (B, ...)."""
    _check_likelihood("reconstruction_loss", likelihood)
    if output.shape != target.shape or len(output.shape) < 2 or output.shape[0] < 1:
        raise ValueError(f"reconstruction_loss: output {tuple(output.shape)} and target "
                         f"{tuple(target.shape)} must have the same shape (B, ...), B >= 1")
    per_example = 1.0 / output.shape[0]
    if likelihood == "bernoulli":
        return binary_cross_entropy_with_logits(output, target, reduction="sum") * per_example
    check_sigma("reconstruction_loss", sigma)
    return mse_loss(output, target, reduction="sum") * (per_example / (2.0 * sigma * sigma))


def check_probabilities(owner, target):
    """A Bernoulli likelihood reads each target value as a probability: outside [0, 1] the loss
    is unbounded below ([0, 255] pixels gave -594 nats and a decoder pushed to infinity). On the
    host only, as reading the extremes back from a GPU would be a sync every step."""
    extremes = backend.host_extremes(target)
    if extremes is None:
        return
    smallest, largest = extremes
    if smallest < 0.0 or largest > 1.0:
        hint = "divide [0, 255] pixels by 255" if largest > 2 else "use likelihood='gaussian'"
        raise ValueError(f"{owner}: a Bernoulli likelihood needs targets in [0, 1], got values in "
                         f"[{smallest:g}, {largest:g}] ({hint}); outside [0, 1] the loss has no "
                         f"lower bound")


MIN_SIGMA = 1e-15   # 1 / (2 sigma^2) = 5e29 still leaves float32 room to sum an image's errors


def check_sigma(owner, sigma):
    """The Gaussian loss scales squared errors by 1 / (2 sigma^2), a float32 factor: below
    MIN_SIGMA it is inf (sigma = 1e-20 gave an inf loss, and NaN once trained on)."""
    return checks.at_least(owner, "sigma", sigma, MIN_SIGMA,
                           "the loss divides by 2 sigma^2 in float32, which overflows below it")


def decoder_mean(output, likelihood="bernoulli"):
    """The mean of p(x | output): sigmoid of the logits for "bernoulli", the output itself for
    "gaussian". This is the image to look at (a reconstruction, a sample)."""
    _check_likelihood("decoder_mean", likelihood)
    return sigmoid(output) if likelihood == "bernoulli" else output


# ----- corruptions for the denoising autoencoder (the noises live in minienc/data/augment.py) ------

CORRUPTIONS = ("gaussian", "mask", "salt_and_pepper")


def corruption(kind="mask", level=0.25):
    """The corruption q(x~ | x) named `kind` at `level` (the noise std for "gaussian", the fraction
    of values for "mask" and "salt_and_pepper"): an augmentation, called on a batch (N, C, H, W)
    as `corrupt(x, rng=None)`; it draws on the batch's device and keeps shape, dtype and type."""
    check_corruption("corruption", "kind", kind, level)
    if kind == "gaussian":
        return GaussianNoise(std=level)   # unclipped, as in Vincent et al.
    return MaskingNoise(level) if kind == "mask" else SaltAndPepperNoise(level)


def check_corruption(owner, kind_name, kind, level):
    """A corruption's kind and level, checked under the name of whoever was given them (the
    noises check their own std and fraction too, under theirs, for direct use): the gaussian
    noise's std a finite number >= 0, the share of values masked or salted a fraction in [0, 1]."""
    checks.one_of(owner, kind_name, kind, CORRUPTIONS)
    if kind == "gaussian":
        checks.non_negative(owner, "level (the gaussian noise std)", level)
    else:
        checks.in_range(owner, f"level (the fraction of values {kind} noise sets)", level, 0, 1)


# ----- the VAE's pieces ------------------------------------------------------------------------------

def _check_gaussian_params(name, mu, logvar):
    if mu.shape != logvar.shape or len(mu.shape) != 2 or 0 in mu.shape:
        raise ValueError(f"{name}: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must both "
                         f"have shape (B, J), B and J >= 1")


def reparameterize(mu, logvar, eps=None):
    """z = mu + exp(0.5 logvar) * eps with eps ~ N(0, I) drawn on mu's device (or the `eps`
    given, to hold the noise fixed): a sample of N(mu, exp(logvar)) differentiable in both."""
    _check_gaussian_params("reparameterize", mu, logvar)
    if eps is None:
        noise = backend.rng(mu.device).standard_normal(mu.shape, dtype=mu.dtype)
        eps = as_tensor(noise)
    elif eps.shape != mu.shape:
        raise ValueError(f"reparameterize: eps {tuple(eps.shape)} must have mu's shape {tuple(mu.shape)}")
    return mu + (logvar * 0.5).exp() * eps


def kl_to_standard_normal(mu, logvar, reduction="mean"):
    """KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 sum_j (mu^2 + exp(logvar) - 1 - logvar), summed over
    the latent dimensions; mu, logvar (B, J). reduction="mean": averaged over the batch (the
    VAE's loss term); "none": one KL per example, (B,) (the anomaly score's term)."""
    _check_gaussian_params("kl_to_standard_normal", mu, logvar)
    checks.one_of("kl_to_standard_normal", "reduction", reduction, ("mean", "none"))
    twice_kl = mu * mu + logvar.exp() - 1.0 - logvar
    if reduction == "none":
        return twice_kl.sum(axis=1) * 0.5
    return twice_kl.sum() * (0.5 / mu.shape[0])


def kl_weight_schedule(beta=1.0, warmup_steps=0):
    """beta as a function of the step: a linear warm-up from 0 to `beta` over `warmup_steps`
    (0: constant beta). Give it to the Trainer, which sets the VAE's `beta` before each step:
    Trainer(vae, optimizer, schedules={"beta": kl_weight_schedule(1.0, 500)})."""
    checks.non_negative("kl_weight_schedule", "beta", beta)
    checks.non_negative_int("kl_weight_schedule", "warmup_steps", warmup_steps)
    return LinearSchedule(0.0, beta, warmup_steps) if warmup_steps else Constant(beta)


# ----- encoders and decoders ---------------------------------------------------------------------------

def _transposed_size(size, layers, kernel=3, stride=2, padding=1, output_padding=1):
    for _ in range(layers):
        size = (size - 1) * stride - 2 * padding + kernel + output_padding
    return size


def build_encoder_decoder(image_shape, latent_dim, code_dim=None, arch="mlp", hidden=(256, 128),
                          channels=(16, 32)):
    """An encoder from images (N, C, H, W) to (N, code_dim) (default latent_dim; a VAE asks for
    2 * latent_dim: mean and log-variance) and a decoder from (N, latent_dim) back to images
    (logits or means, no final activation).
        mlp:  Flatten -> MLPEncoder(D, hidden, code_dim);  MLPEncoder(latent, hidden reversed, D) -> Unflatten
        conv: ConvEncoder(C, channels, stride 2) -> Linear;  Linear -> ConvDecoder(channels reversed)
    """
    return _encoder_decoder("build_encoder_decoder", image_shape, latent_dim, code_dim, arch,
                            hidden, channels)


def _encoder_decoder(owner, image_shape, latent_dim, code_dim, arch, hidden, channels):
    """build_encoder_decoder, its arguments checked under the name of the function the user
    called (it, or build_model), before a layer is built from them."""
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise ValueError(f"{owner}: image_shape must be (C, H, W), got {image_shape!r}")
    c, h, w = (checks.positive_int(owner, "image_shape", n) for n in image_shape)
    checks.positive_int(owner, "latent_dim", latent_dim)
    checks.one_of(owner, "arch", arch, ARCHS)
    hidden, channels = checks.sizes(owner, "hidden", hidden), checks.sizes(owner, "channels", channels)
    code_dim = latent_dim if code_dim is None else code_dim
    if arch == "mlp":
        encoder = Sequential(Flatten(), MLPEncoder(c * h * w, hidden, code_dim))
        decoder = Sequential(MLPEncoder(latent_dim, tuple(reversed(hidden)), c * h * w), Unflatten(image_shape))
        return encoder, decoder
    encoder = ConvEncoder(c, channels, out_features=code_dim, image_size=(h, w))   # arch "conv"
    out_hw = tuple(_transposed_size(s, len(channels)) for s in encoder.feature_shape[1:])
    if out_hw != (h, w):
        raise ValueError(f"{owner}: the conv decoder would rebuild {out_hw} images "
                         f"from {(h, w)} (each stride-2 layer halves the size: use sides "
                         f"divisible by {2 ** len(channels)} or fewer channels entries)")
    decoder = ConvDecoder(c, tuple(reversed(channels)), in_features=latent_dim,
                          feature_shape=encoder.feature_shape)
    return encoder, decoder



# ----- the three objectives ---------------------------------------------------------------------------

class Autoencoder(Objective):
    """z = encoder(x);  loss(x) = R(decoder(z), x).  embed(x) is z; reconstruct(x) the image."""

    def __init__(self, encoder, decoder, likelihood="bernoulli", sigma=1.0):
        _check_likelihood(type(self).__name__, likelihood)
        check_sigma(type(self).__name__, sigma)
        self.encoder, self.decoder = encoder, decoder
        self.likelihood, self.sigma = likelihood, sigma

    def loss(self, x):
        return {"loss": self.reconstruction(self.decoder(self.embed(x)), x)}

    def reconstruction(self, output, x):
        """R(output, x) under this model's likelihood. The data x is checked where it enters:
        a Bernoulli likelihood refuses values outside [0, 1] (check_probabilities). (The function
        reconstruction_loss is the bare formula, as PyTorch's losses are, for any target.)"""
        if self.likelihood == "bernoulli":
            check_probabilities(type(self).__name__, as_array(x))
        return reconstruction_loss(output, x, self.likelihood, self.sigma)

    def reconstruct(self, x):
        """The decoder's mean for x: the image it rebuilds."""
        return self.decode(self.embed(x))

    def decode(self, z):
        """The images (decoder means) for codes z (N, J)."""
        return decoder_mean(self.decoder(z), self.likelihood)

    def interpolate(self, x_start, x_end, steps=8):
        """Decode `steps` evenly spaced points on the line from embed(x_start) to embed(x_end)
        (P pairs of images) -> (P, steps, C, H, W), without a graph."""
        with no_grad():
            z_start, z_end = self.embed(x_start).data, self.embed(x_end).data
            xp = backend.get_xp(z_start)
            t = xp.linspace(0.0, 1.0, steps, dtype=z_start.dtype)[None, :, None]
            z = z_start[:, None, :] * (1.0 - t) + z_end[:, None, :] * t       # (P, steps, J)
            images = self.decode(as_tensor(z.reshape(-1, z.shape[-1])))
        return images.reshape(z.shape[0], steps, *images.shape[1:])


class DenoisingAutoencoder(Autoencoder):
    """x~ = corrupt(x);  loss(x) = R(decoder(encoder(x~)), x), the target the CLEAN x.
    `rng` holds the corruption fixed (tests); by default it is drawn on the device."""

    def __init__(self, encoder, decoder, noise="mask", level=0.25, likelihood="bernoulli", sigma=1.0):
        super().__init__(encoder, decoder, likelihood, sigma)
        check_corruption(type(self).__name__, "noise", noise, level)
        self.noise, self.level = noise, level
        self.corrupt = corruption(noise, level)

    def loss(self, x, rng=None):
        corrupted = self.corrupt(x, rng)
        return {"loss": self.reconstruction(self.decoder(self.embed(corrupted)), x)}


class VAE(Autoencoder):
    """(mu, log sigma^2) = encoder(x) split in two (B, J) halves;  z = mu + sigma * eps;
    loss(x) = R(decoder(z), x) + beta KL(q(z|x) || N(0, I)) -> {"loss", "recon", "kl"}.

    embed(x) is mu. `beta` is an attribute: a KL warm-up sets it before each step (the
    Trainer's schedules={"beta": kl_weight_schedule(1.0, 500)}); `eps` (B, J) holds the noise
    fixed (tests), otherwise it is drawn on the device."""

    def __init__(self, encoder, decoder, latent_dim, likelihood="bernoulli", sigma=1.0, beta=1.0):
        super().__init__(encoder, decoder, likelihood, sigma)
        self.latent_dim = checks.positive_int("VAE", "latent_dim", latent_dim)
        self.beta = checks.non_negative("VAE", "beta", beta)

    def posterior(self, x):
        """(mu, logvar) of q(z | x), each (B, J)."""
        h = self.encoder(x)
        if len(h.shape) != 2 or h.shape[1] != 2 * self.latent_dim:
            raise ValueError(f"VAE.posterior: the encoder gave {tuple(h.shape)}, expected "
                             f"(B, 2 * latent_dim) = (B, {2 * self.latent_dim})")
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def embed(self, x):
        return self.posterior(x)[0]

    def loss(self, x, eps=None):
        mu, logvar = self.posterior(x)
        z = reparameterize(mu, logvar, eps)
        recon = self.reconstruction(self.decoder(z), x)
        kl = kl_to_standard_normal(mu, logvar)
        return {"loss": recon + kl * self.beta, "recon": recon, "kl": kl}

    def sample(self, n, rng=None):
        """n new images: decoder means at z ~ N(0, I), drawn on the model's device."""
        gen = rng if rng is not None else backend.rng(self.device)
        z = gen.standard_normal((n, self.latent_dim), dtype=self.decoder.parameters()[0].dtype)
        with no_grad():
            return self.decode(as_tensor(z))


def build_model(kind, image_shape, latent_dim=16, arch="mlp", likelihood="bernoulli", sigma=1.0,
                hidden=(256, 128), channels=(16, 32), **options):
    """An "autoencoder", "denoising" (options: noise, level) or "vae" (option: beta) objective
    with encoder and decoder from `build_encoder_decoder`."""
    models = {"autoencoder": Autoencoder, "denoising": DenoisingAutoencoder, "vae": VAE}
    if kind not in models:
        raise ValueError(f"build_model: kind must be one of {tuple(models)}, got {kind!r}")
    checks.positive_int("build_model", "latent_dim", latent_dim)   # (before it is doubled)
    code_dim = 2 * latent_dim if kind == "vae" else latent_dim
    encoder, decoder = _encoder_decoder("build_model", image_shape, latent_dim, code_dim, arch,
                                        hidden, channels)
    if kind == "vae":
        return VAE(encoder, decoder, latent_dim, likelihood, sigma, **options)
    return models[kind](encoder, decoder, likelihood=likelihood, sigma=sigma, **options)
