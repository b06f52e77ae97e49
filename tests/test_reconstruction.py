"""Reconstruction objectives (minienc/objectives/reconstruction.py): every loss against finite
differences on every backend (the VAE with its noise held fixed), the reductions the docstring
promises (sum over an example's values, mean over the batch), the KL's zero and sign, the DAE's
clean target, corruption fractions, reparameterised sample statistics, and a short training run
per objective."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minienc
from minienc import backend, nn
from minienc.data import BatchIterator, MaskingNoise, SaltAndPepperNoise, load_digits
from minienc.objectives.reconstruction import (
    VAE, DenoisingAutoencoder, build_encoder_decoder,
    build_model, corruption, decoder_mean, kl_to_standard_normal, kl_weight_schedule,
    reconstruction_loss, reparameterize)
from minienc.optim import Adam
from minienc.train import Trainer
from nn_check import gradcheck_module, rand


def host(t):
    return t.numpy() if isinstance(t, minienc.Tensor) else backend.to_host(t)


def images(device, n=4, shape=(1, 4, 4), seed=0, low=0.0, dtype="float64", requires_grad=False):
    data = np.random.default_rng(seed).uniform(low, 1.0, size=(n, *shape))
    return minienc.tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


class LossOf(nn.Module):
    """A model's scalar loss as a module's forward, so gradcheck_module binds its parameters."""

    def __init__(self, model, **options):
        self.model, self.options = model, options

    def forward(self, x):
        out = self.model.loss(x, **self.options)
        return out["loss"] if isinstance(out, dict) else out


# ----- the reconstruction term -------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_reconstruction_loss_gradcheck(device, likelihood):
    output = rand(device, 3, 1, 2, 3, seed=1)
    target = images(device, 3, (1, 2, 3), requires_grad=True)
    assert minienc.gradcheck(lambda o, t: reconstruction_loss(o, t, likelihood, sigma=0.7), output, target)


@given(shape=st.lists(st.integers(1, 3), min_size=2, max_size=4), seed=st.integers(0, 999),
       likelihood=st.sampled_from(["bernoulli", "gaussian"]))
def test_reconstruction_loss_and_kl_gradcheck_any_shape(shape, seed, likelihood):
    output, target = rand("cpu", *shape, seed=seed), rand("cpu", *shape, seed=seed + 1)
    assert minienc.gradcheck(lambda o, t: reconstruction_loss(o, t, likelihood, sigma=1.3), output, target)
    mu, logvar = rand("cpu", *shape[:2], seed=seed + 2), rand("cpu", *shape[:2], seed=seed + 3, scale=0.5)
    assert minienc.gradcheck(kl_to_standard_normal, mu, logvar)


@given(n=st.integers(1, 5), d=st.integers(1, 6), sigma=st.floats(0.1, 3.0), seed=st.integers(0, 999))
def test_reconstruction_loss_sums_values_and_averages_examples(n, d, sigma, seed):
    rng = np.random.default_rng(seed)
    logits, target = rng.standard_normal((n, 1, d)), rng.uniform(0, 1, (n, 1, d))
    p = 1 / (1 + np.exp(-logits))
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p)).sum() / n
    mse = ((logits - target) ** 2).sum() / (2 * sigma**2) / n
    out, tgt = minienc.tensor(logits, dtype="float64"), minienc.tensor(target, dtype="float64")
    assert reconstruction_loss(out, tgt, "bernoulli").item() == pytest.approx(bce, rel=1e-9)
    assert reconstruction_loss(out, tgt, "gaussian", sigma).item() == pytest.approx(mse, rel=1e-9)
    # the same examples twice: the same per-example loss
    twice = [minienc.tensor(np.concatenate([a, a]), dtype="float64") for a in (logits, target)]
    assert reconstruction_loss(*twice, "bernoulli").item() == pytest.approx(bce, rel=1e-9)


def test_reconstruction_loss_stays_float32_and_names_bad_shapes(device):
    x = images(device, dtype="float32")
    assert reconstruction_loss(x, x, "gaussian").dtype == np.float32
    assert reconstruction_loss(x, x, "bernoulli").dtype == np.float32
    with pytest.raises(ValueError, match=r"reconstruction_loss: output \(4, 1, 4, 4\) and target \(4, 16\)"):
        reconstruction_loss(x, x.reshape(4, 16))
    with pytest.raises(ValueError, match="reconstruction_loss: likelihood"):
        reconstruction_loss(x, x, "poisson")


def test_decoder_mean():
    logits = minienc.tensor([[-2.0, 0.0, 3.0]])
    np.testing.assert_allclose(host(decoder_mean(logits, "bernoulli")), 1 / (1 + np.exp(-host(logits))), rtol=1e-6)
    assert decoder_mean(logits, "gaussian") is logits


# ----- autoencoder models --------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_autoencoder_loss_gradcheck(device, arch, likelihood):
    model = build_model("autoencoder", (1, 4, 4), latent_dim=3, arch=arch, likelihood=likelihood,
                        hidden=(5,), channels=(2, 3)).to(device)
    assert gradcheck_module(LossOf(model), images(device, 2, requires_grad=True))


@pytest.mark.parametrize("arch,shape", [("mlp", (1, 8, 8)), ("conv", (1, 8, 8)), ("conv", (1, 28, 28)),
                                        ("mlp", (3, 5, 7))])
def test_encoder_decoder_shapes(arch, shape):
    encoder, decoder = build_encoder_decoder(shape, latent_dim=4, code_dim=6, arch=arch)
    x = minienc.tensor(np.zeros((2, *shape)))
    assert encoder(x).shape == (2, 6)
    assert decoder(minienc.zeros(2, 4)).shape == (2, *shape)


def test_build_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"build_encoder_decoder: the conv decoder would rebuild \(8, 8\) "
                                         r"images from \(7, 7\)"):
        build_encoder_decoder((1, 7, 7), 4, arch="conv")
    with pytest.raises(ValueError, match="build_encoder_decoder: image_shape must be"):
        build_encoder_decoder((8, 8), 4)
    with pytest.raises(ValueError, match="build_model: kind must be"):
        build_model("gan", (1, 8, 8))


# ----- denoising ---------------------------------------------------------------------------------------

@given(n=st.integers(1, 6), shape=st.sampled_from([(1, 4, 4), (1, 8, 8), (3, 5, 2)]),
       fraction=st.floats(0.0, 1.0), seed=st.integers(0, 999))
def test_masking_noise_zeros_exactly_the_requested_fraction(n, shape, fraction, seed):
    x = np.random.default_rng(seed).uniform(0.1, 1.0, (n, *shape)).astype(np.float32)
    out = MaskingNoise(fraction)(x, rng=seed)
    assert out.shape == x.shape and out.dtype == x.dtype
    d = int(np.prod(shape))
    zeros = (out == 0).reshape(n, d).sum(axis=1)
    assert (zeros == round(fraction * d)).all()
    kept = out != 0
    np.testing.assert_array_equal(out[kept], x[kept])      # the rest is untouched


def test_masking_noise_picks_different_positions_per_example(device):
    x = minienc.tensor(np.ones((64, 1, 8, 8)), device=device)
    out = corruption("mask", 0.25)(x)
    assert isinstance(out, minienc.Tensor) and out.device == device
    masks = host(out) == 0
    assert len({m.tobytes() for m in masks}) == 64
    # every position is hit about 25% of the time over many examples
    frequency = (host(corruption("mask", 0.25)(minienc.tensor(np.ones((4000, 1, 8, 8)), device=device))) == 0).mean(0)
    assert abs(frequency - 0.25).max() < 0.05


def test_salt_and_pepper_noise(device):
    x = minienc.tensor(np.full((2000, 1, 4, 4), 0.5), device=device)
    out = host(SaltAndPepperNoise(0.25)(x))
    changed = out != 0.5
    assert (changed.reshape(2000, 16).sum(1) == 4).all()
    assert set(np.unique(out[changed])) == {0.0, 1.0}
    assert abs((out[changed] == 1.0).mean() - 0.5) < 0.03


def test_gaussian_corruption_has_the_requested_std(device):
    x = minienc.tensor(np.full((500, 1, 8, 8), 0.5), device=device)
    noise = host(corruption("gaussian", 0.3)(x)) - 0.5
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.3) < 0.01


def test_corruption_rejects_bad_levels():
    with pytest.raises(ValueError, match=r"corruption: level \(the fraction of values mask noise sets\) must be in"):
        corruption("mask", 1.5)
    with pytest.raises(ValueError, match=r"corruption: level \(the gaussian noise std\) must be a finite number >= 0"):
        corruption("gaussian", -0.1)
    with pytest.raises(ValueError, match="corruption: kind must be one of"):
        corruption("blur", 0.1)


@pytest.mark.parametrize("noise", ["gaussian", "mask", "salt_and_pepper"])
def test_denoising_target_is_the_clean_input(device, noise):
    # identity encoder and decoder: the output IS the corrupted input, so the loss is the distance
    # from the corrupted to the clean batch (zero if the target were the corrupted batch)
    dae = DenoisingAutoencoder(nn.Identity(), nn.Identity(), noise, 0.5, likelihood="gaussian")
    x = images(device, 8, low=0.2)
    corrupted = dae.corrupt(x, rng=7)
    expected = ((host(corrupted) - host(x)) ** 2).sum() / 2 / 8
    assert expected > 0.1
    assert dae.loss(x, rng=7)["loss"].item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_denoising_loss_gradcheck(device, arch):
    # the corruption held fixed (an int seed draws the same noise each call); gradients w.r.t. the
    # parameters (the corrupted input carries no gradient back to x, by design)
    model = build_model("denoising", (1, 4, 4), 3, arch, hidden=(5,), channels=(2, 3), noise="mask").to(device)
    assert gradcheck_module(LossOf(model, rng=3), images(device, 2))


# ----- VAE: KL, reparameterisation, loss ------------------------------------------------------------

@given(n=st.integers(1, 5), j=st.integers(1, 6))
def test_kl_is_zero_at_the_prior(n, j):
    zeros = minienc.zeros(n, j)
    assert kl_to_standard_normal(zeros, zeros).item() == 0.0


@given(n=st.integers(1, 4), j=st.integers(1, 5), seed=st.integers(0, 10**6),
       scale=st.floats(1e-3, 5.0), which=st.sampled_from(["mu", "logvar", "both"]))
def test_kl_is_positive_away_from_the_prior(n, j, seed, scale, which):
    # float64 and at least one coordinate 1e-3 from the prior: KL >= ~5e-7 there, far above rounding
    rng = np.random.default_rng(seed)
    mu, logvar = np.zeros((n, j)), np.zeros((n, j))
    values = rng.uniform(-1, 1, (n, j)) * scale
    values.flat[0] = scale if values.flat[0] >= 0 else -scale
    if which in ("mu", "both"):
        mu = values
    if which in ("logvar", "both"):
        logvar = values[::-1].copy()
    mu_t, logvar_t = minienc.tensor(mu, dtype="float64"), minienc.tensor(logvar, dtype="float64")
    kl = kl_to_standard_normal(mu_t, logvar_t)
    expected = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar).sum(axis=1)   # one KL per example
    assert kl.item() > 0 and kl.item() == pytest.approx(expected.mean(), rel=1e-9)
    per_example = kl_to_standard_normal(mu_t, logvar_t, reduction="none")
    assert per_example.shape == (n,)
    np.testing.assert_allclose(per_example.data, expected, rtol=1e-9, atol=1e-300)


def test_kl_matches_a_monte_carlo_estimate():
    # E_q[log q(z) - log p(z)] for q = N(0.8, 0.6^2), p = N(0, 1), estimated from samples
    mu, sigma = 0.8, 0.6
    z = np.random.default_rng(0).normal(mu, sigma, 400_000)
    log_q = -0.5 * ((z - mu) / sigma) ** 2 - math.log(sigma)
    log_p = -0.5 * z**2
    estimate = (log_q - log_p).mean()
    kl = kl_to_standard_normal(minienc.tensor([[mu]], dtype="float64"),
                               minienc.tensor([[2 * math.log(sigma)]], dtype="float64")).item()
    assert kl == pytest.approx(estimate, abs=4 * (log_q - log_p).std() / math.sqrt(len(z)))


def test_kl_and_reparameterize_gradcheck(device):
    mu, logvar = rand(device, 3, 4, seed=1), rand(device, 3, 4, seed=2, scale=0.5)
    eps = rand(device, 3, 4, seed=3, requires_grad=False)
    assert minienc.gradcheck(kl_to_standard_normal, mu, logvar)
    assert minienc.gradcheck(lambda m, v: kl_to_standard_normal(m, v, reduction="none"), mu, logvar)
    assert minienc.gradcheck(lambda m, v: reparameterize(m, v, eps), mu, logvar)


def test_reparameterized_samples_have_the_requested_mean_and_variance(device):
    n = 200_000
    mu = np.tile([[1.5, -2.0, 0.0]], (n, 1))
    var = np.tile([[0.25, 4.0, 1.0]], (n, 1))
    z = host(reparameterize(minienc.tensor(mu, device=device), minienc.tensor(np.log(var), device=device)))
    assert z.dtype == np.float32
    # 5 standard errors: the mean's is sqrt(var / n), the variance's sqrt(2 / n) var for a Gaussian
    assert np.all(np.abs(z.mean(0) - mu[0]) < 5 * np.sqrt(var[0] / n))
    assert np.all(np.abs(z.var(0) - var[0]) < 5 * np.sqrt(2 / n) * var[0])
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 5 / np.sqrt(n)   # independent dimensions


def test_reparameterize_and_kl_name_bad_shapes():
    with pytest.raises(ValueError, match=r"kl_to_standard_normal: mu \(2, 3\) and logvar \(2, 4\)"):
        kl_to_standard_normal(minienc.zeros(2, 3), minienc.zeros(2, 4))
    with pytest.raises(ValueError, match=r"reparameterize: eps \(2, 2\) must have mu's shape \(2, 3\)"):
        reparameterize(minienc.zeros(2, 3), minienc.zeros(2, 3), minienc.zeros(2, 2))


@pytest.mark.parametrize("arch,likelihood", [("mlp", "bernoulli"), ("conv", "gaussian")])
def test_vae_loss_gradcheck_with_fixed_noise(device, arch, likelihood):
    model = build_model("vae", (1, 4, 4), 3, arch, likelihood, sigma=0.5, hidden=(5,),
                        channels=(2, 3)).to(device)
    eps = rand(device, 2, 3, seed=5, requires_grad=False)
    model.beta = 0.7
    assert gradcheck_module(LossOf(model, eps=eps), images(device, 2, requires_grad=True))


def test_vae_loss_terms(device):
    model = build_model("vae", (1, 4, 4), 3, hidden=(5,)).to(device)
    x = images(device, 5, dtype="float32")
    eps = minienc.tensor(np.zeros((5, 3)), device=device)
    model.beta = 0.25
    out = model.loss(x, eps=eps)
    mu, logvar = model.posterior(x)
    # eps = 0: z is mu, so the reconstruction term is that of decoding mu
    assert out["recon"].item() == pytest.approx(reconstruction_loss(model.decoder(model.embed(x)), x).item(), rel=1e-6)
    assert out["kl"].item() == pytest.approx(kl_to_standard_normal(mu, logvar).item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 0.25 * out["kl"].item(), rel=1e-6)
    assert host(model.embed(x)).shape == (5, 3)


def test_vae_sampling_and_interpolation(device):
    model = build_model("vae", (1, 4, 4), 3, hidden=(5,)).to(device)
    samples = model.sample(7)
    assert samples.shape == (7, 1, 4, 4) and samples.device == device and not samples.requires_grad
    assert 0 <= host(samples).min() and host(samples).max() <= 1          # Bernoulli means
    x = images(device, 4, dtype="float32")
    walk = model.interpolate(x[:2], x[2:], steps=5)
    assert walk.shape == (2, 5, 1, 4, 4)
    with minienc.no_grad():
        np.testing.assert_allclose(host(walk[:, 0]), host(model.reconstruct(x[:2])), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(host(walk[:, -1]), host(model.reconstruct(x[2:])), rtol=1e-5, atol=1e-6)


def test_vae_posterior_checks_the_encoder_width():
    encoder, decoder = build_encoder_decoder((1, 4, 4), latent_dim=3, code_dim=3)
    with pytest.raises(ValueError, match=r"VAE.posterior: the encoder gave \(2, 3\), expected"):
        VAE(encoder, decoder, latent_dim=3).loss(minienc.zeros(2, 1, 4, 4))


def test_kl_weight_schedule():
    warm = kl_weight_schedule(2.0, warmup_steps=10)
    assert [warm(0), warm(5), warm(10), warm(99)] == [0.0, 1.0, 2.0, 2.0]
    assert kl_weight_schedule(0.5)(0) == 0.5


# ----- a short training run per objective --------------------------------------------------------------

@pytest.mark.parametrize("kind,options", [("autoencoder", {}), ("denoising", {"noise": "mask", "level": 0.25}),
                                          ("denoising", {"noise": "gaussian", "level": 0.3}), ("vae", {})])
def test_short_training_lowers_the_loss(device, kind, options):
    data = load_digits()
    model = build_model(kind, data.image_shape, 8, hidden=(64,), **options).to(device)
    loader = BatchIterator(data.x_train, batch_size=64, device=device)
    schedules = {"beta": kl_weight_schedule(1.0, 2 * len(loader))} if kind == "vae" else {}
    trainer = Trainer(model, Adam(model.param_groups(), lr=3e-3), log_every=len(loader),
                      progress=False, schedules=schedules)   # sets the VAE's beta each step
    trainer.fit(loader, epochs=8)
    if kind == "vae":
        assert model.beta == 1.0 and trainer.values["beta"] == 1.0
    first, last = trainer.losses[0], trainer.records[-1]["loss"]   # the first step, the last epoch
    # ~44 nats per image at the start; 8 epochs get well under 2/3 of that (VAE: at full beta)
    assert last < 0.67 * first, (first, last)
    if kind == "vae":
        assert trainer.records[-1]["kl"] > 0.5      # the code carries information


@pytest.mark.parametrize("kind", ["autoencoder", "denoising", "vae"])
@pytest.mark.parametrize("scale, shift, hint", [(255.0, 0.0, "divide \\[0, 255\\] pixels by 255"),
                                                (4.0, -2.0, "use likelihood='gaussian'")])
def test_a_bernoulli_model_refuses_images_outside_0_1(kind, scale, shift, hint):
    """[0, 255] pixels gave an autoencoder's loss of -594 nats (a Bernoulli likelihood read 255
    as a probability: unbounded below), standardised ones a loss with no meaning, silently."""
    model = build_model(kind, (1, 4, 4), latent_dim=2)
    x = minienc.tensor(np.random.default_rng(0).random((3, 1, 4, 4)).astype(np.float32) * scale + shift)
    with pytest.raises(ValueError, match=rf"^{type(model).__name__}: a Bernoulli likelihood needs "
                                         rf"targets in \[0, 1\], got values in .*\({hint}\)"):
        model.loss(x)
    gaussian = build_model(kind, (1, 4, 4), latent_dim=2, likelihood="gaussian")
    assert np.isfinite(float(gaussian.loss(x)["loss"].data))


def test_anomaly_scores_refuse_images_a_bernoulli_model_cannot_read():
    from minienc.eval.anomaly import autoencoder_scores
    model = build_model("autoencoder", (1, 4, 4), latent_dim=2)
    with pytest.raises(ValueError, match=r"^reconstruction_per_example: a Bernoulli likelihood needs"):
        autoencoder_scores(model, np.full((2, 1, 4, 4), 255.0, np.float32))


@pytest.mark.parametrize("sigma", [1e-20, 1e-30])
def test_a_gaussian_sigma_too_small_for_float32_is_refused(sigma):
    """1 / (2 sigma^2) overflowed float32: the loss was inf, and NaN once trained on."""
    with pytest.raises(ValueError, match=r"^Autoencoder: sigma must be at least 1e-15"):
        build_model("autoencoder", (1, 4, 4), latent_dim=2, likelihood="gaussian", sigma=sigma)
    with pytest.raises(ValueError, match=r"^reconstruction_loss: sigma must be at least 1e-15"):
        reconstruction_loss(minienc.zeros(2, 4), minienc.ones(2, 4), "gaussian", sigma)
    assert np.isfinite(float(reconstruction_loss(minienc.zeros(2, 4), minienc.ones(2, 4), "gaussian",
                                                 1e-15).data))
