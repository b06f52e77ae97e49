"""Degenerate and careless arguments: every constructor, loss and schedule refuses a value it
cannot work with when it is given -- zero sizes, stride 0, temperature 0, a ratio out of range --
with a ValueError that names the owner and the argument, never a ZeroDivisionError or a raw NumPy
message later on."""
import numpy as np
import pytest

import minienc
from minienc import data as D
from minienc import nn, optim
from minienc.data import colour
from minienc.objectives import (DINO, IJEPA, MAE, BarlowTwins, LeJEPA, MaskedViewsJEPA, VICReg,
                                barlow_projector, build_model, dino_head, kl_to_standard_normal,
                                reconstruction_loss, vicreg_expander)
from minienc.objectives.dino import WeightNormLinear
from minienc.objectives.multiblock import MultiBlockMaskSampler
from minienc.objectives.reconstruction import kl_weight_schedule


def params():
    return nn.Linear(2, 2).parameters()


def x4():
    return minienc.tensor(np.ones((1, 1, 4, 4)))


CASES = {
    "Linear in_features 0": (lambda: nn.Linear(0, 4), r"^Linear: in_features must be a positive integer, got 0"),
    "Linear out_features": (lambda: nn.Linear(4, -1), r"^Linear: out_features"),
    "Conv2d stride 0": (lambda: nn.Conv2d(1, 4, 3, stride=0), r"^Conv2d: stride must be an integer >= 1"),
    "Conv2d kernel 0": (lambda: nn.Conv2d(1, 4, 0), r"^Conv2d: kernel_size"),
    "Conv2d padding": (lambda: nn.Conv2d(1, 4, 3, padding=-1), r"^Conv2d: padding must be an integer >= 0"),
    "Conv2d channels": (lambda: nn.Conv2d(0, 4, 3), r"^Conv2d: in_channels"),
    "Conv2d kernel triple": (lambda: nn.Conv2d(1, 4, (3, 3, 3)), r"^Conv2d: kernel_size must be an integer"),
    "ConvTranspose2d output_padding": (lambda: nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2),
                                       r"^ConvTranspose2d: output_padding \(2, 2\) must be smaller"),
    "MaxPool2d kernel": (lambda: nn.MaxPool2d(0), r"^MaxPool2d: kernel_size"),
    "AvgPool2d stride": (lambda: nn.AvgPool2d(2, stride=0), r"^AvgPool2d: stride"),
    "conv2d op stride": (lambda: minienc.conv2d(x4(), minienc.tensor(np.ones((1, 1, 3, 3))), stride=0),
                         r"^conv2d: stride"),
    "max_pool2d op stride": (lambda: minienc.max_pool2d(x4(), 2, stride=0), r"^max_pool2d: stride"),
    "Embedding size": (lambda: nn.Embedding(0, 3), r"^Embedding: num_embeddings"),
    "LayerNorm dim": (lambda: nn.LayerNorm(0), r"^LayerNorm: dim"),
    "BatchNorm momentum": (lambda: nn.BatchNorm1d(4, momentum=1.5), r"^BatchNorm1d: momentum must be in \[0.0, 1.0\]"),
    "BatchNorm features": (lambda: nn.BatchNorm2d(0), r"^BatchNorm2d: num_features"),
    "attention heads": (lambda: nn.MultiHeadAttention(8, 0), r"^MultiHeadAttention: num_heads"),
    "block mlp_ratio": (lambda: nn.TransformerBlock(8, 2, mlp_ratio=0), r"^TransformerBlock: mlp_ratio"),
    "ViT patch_size": (lambda: nn.VisionTransformer(image_size=8, patch_size=0), r"^PatchEmbed: patch_size"),
    "ViT depth": (lambda: nn.VisionTransformer(image_size=8, patch_size=2, depth=-1), r"^VisionTransformer: depth"),
    "MLPEncoder hidden": (lambda: nn.MLPEncoder(64, (256, 0), 32), r"^MLPEncoder: hidden must be a positive integer, got 0"),
    "ConvEncoder too small": (lambda: nn.ConvEncoder(1, (4, 4), kernel_size=3, stride=2, padding=0,
                                                     image_size=4, out_features=2),
                              r"^ConvEncoder: image_size 4 is too small for 2 convolutions"),
    "TextTransformer vocab": (lambda: nn.TextTransformer(0), r"^TextTransformer: vocab_size"),
    "latent dimension 0": (lambda: build_model("vae", (1, 8, 8), latent_dim=0),
                           r"^build_encoder_decoder: latent_dim must be a positive integer, got 0"),
    "reconstruction batch 0": (lambda: reconstruction_loss(minienc.zeros(0, 4), minienc.zeros(0, 4)),
                               r"^reconstruction_loss: .* B >= 1"),
    "kl batch 0": (lambda: kl_to_standard_normal(minienc.zeros(0, 2), minienc.zeros(0, 2)),
                   r"^kl_to_standard_normal: .* B and J >= 1"),
    "kl reduction": (lambda: kl_to_standard_normal(minienc.zeros(2, 2), minienc.zeros(2, 2), reduction="sum"),
                     r"^kl_to_standard_normal: reduction must be one of"),
    "MAE decoder_dim": (lambda: MAE(image_size=4, patch_size=2, decoder_dim=0), r"^MAE: decoder_dim"),
    "smooth_l1 beta < 0": (lambda: minienc.smooth_l1_loss(minienc.zeros(2), minienc.zeros(2), beta=-1.0),
                           r"^smooth_l1_loss: beta must be a finite number >= 0"),
    "normalize eps": (lambda: minienc.normalize(minienc.ones(2, 2), eps=0.0), r"^normalize: eps"),
    "attention op heads": (lambda: minienc.multi_head_attention(minienc.ones(1, 2, 6), 0),
                           r"^multi_head_attention: num_heads"),
    "attention scale": (lambda: minienc.scaled_dot_product_attention(*[minienc.ones(1, 2, 2)] * 3, scale=0.0),
                        r"^scaled_dot_product_attention: scale"),
    "SGD lr": (lambda: optim.SGD(params(), lr=-1.0), r"^SGD: lr must be a finite number >= 0, got -1.0"),
    "SGD weight_decay type": (lambda: optim.SGD(params(), lr=0.1, weight_decay="0.1"), r"^SGD: weight_decay"),
    "SGD momentum": (lambda: optim.SGD(params(), lr=0.1, momentum=1.0), r"^SGD: momentum must be in \[0.0, 1.0\)"),
    "Adam betas": (lambda: optim.Adam(params(), betas=(0.9,)), r"^Adam: betas must be a pair"),
    "Adam eps": (lambda: optim.Adam(params(), eps=0.0), r"^Adam: eps"),
    "LARS trust": (lambda: optim.LARS(params(), lr=0.1, trust_coefficient=0.0), r"^LARS: trust_coefficient"),
    "EMA momentum": (lambda: optim.EMA(nn.Linear(2, 2), momentum=2.0), r"^EMA: momentum must be in \[0.0, 1.0\]"),
    "schedule total_steps": (lambda: optim.WarmupCosine(1e-3, total_steps=0), r"^WarmupCosine: total_steps"),
    "schedule float steps": (lambda: optim.Cosine(0.9, 1.0, total_steps=2.5), r"^Cosine: total_steps"),
    "schedule value": (lambda: optim.LinearSchedule(None, 1.0, 10), r"^LinearSchedule: start must be a finite number"),
    "kl warmup": (lambda: kl_weight_schedule(1.0, warmup_steps=-1), r"^kl_weight_schedule: warmup_steps"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_arguments_are_refused_naming_owner_and_argument(case):
    make, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        make()


def test_warmup_cosine_without_warmup_before_the_first_step():
    schedule = optim.WarmupCosine(1e-3, total_steps=10, warmup_steps=0)
    assert schedule(-1) == schedule(0) == pytest.approx(1e-3)   # was a ZeroDivisionError
    warm = optim.WarmupCosine(1e-3, total_steps=10, warmup_steps=4, start=1e-4)
    assert warm(-3) == warm(0) == pytest.approx(1e-4)


AUGMENTATIONS = {
    "crop padding": (lambda: D.RandomCrop(padding=-1), r"^RandomCrop: padding"),
    "p above 1": (lambda: D.RandomCrop(p=1.5), r"^RandomCrop: p must be in \[0.0, 1.0\]"),
    "affine scale": (lambda: D.RandomAffine(scale=(1.1, 0.9)), r"^RandomAffine: scale must be \(min, max\)"),
    "affine degrees": (lambda: D.RandomAffine(degrees=-5), r"^RandomAffine: degrees"),
    "resized crop scale": (lambda: D.RandomResizedCrop(scale=(0.0, 1.0)), r"^RandomResizedCrop: scale"),
    "resized crop ratio": (lambda: D.RandomResizedCrop(ratio=(2.0, 1.0)), r"^RandomResizedCrop: ratio"),
    "resized crop size": (lambda: D.RandomResizedCrop(size=0), r"^RandomResizedCrop: size"),
    "noise std": (lambda: D.GaussianNoise(std=-0.1), r"^GaussianNoise: std"),
    "erasing scale": (lambda: D.RandomErasing(scale=(0.1, 2.0)), r"^RandomErasing: scale"),
    "jitter": (lambda: D.BrightnessContrast(brightness=1.5), r"^BrightnessContrast: brightness"),
    "multi-crop": (lambda: D.MultiCrop(global_crops=0), r"^MultiCrop: global_crops must be a positive integer"),
    "multi-crop float count": (lambda: D.MultiCrop(2.5, 1), r"^MultiCrop: global_crops must be a positive integer, got 2.5"),
    "multi-crop local count": (lambda: D.MultiCrop(2, -1), r"^MultiCrop: local_crops must be an integer >= 0"),
    "multi-crop local float": (lambda: D.MultiCrop(2, 1.5), r"^MultiCrop: local_crops"),
    "blur p": (lambda: colour.GaussianBlur(p=-0.1), r"^GaussianBlur: p must be in \[0.0, 1.0\]"),
    "flip p": (lambda: colour.RandomHorizontalFlip(p=2), r"^RandomHorizontalFlip: p"),
}


@pytest.mark.parametrize("case", list(AUGMENTATIONS))
def test_bad_augmentation_arguments_are_refused_naming_owner_and_argument(case):
    make, message = AUGMENTATIONS[case]
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("value", [None, "0.5", [0.5]])
def test_a_range_check_refuses_a_value_that_is_not_a_number_by_name(value):
    """Regression: checks.in_range compared before it checked the type, so None gave a bare
    TypeError ('>=' not supported) instead of the named error."""
    from minienc import checks
    with pytest.raises(ValueError, match=r"EMA: momentum must be in \[0, 1\]"):
        checks.in_range("EMA", "momentum", value, 0, 1)


def test_a_loss_refuses_an_unknown_reduction_by_name():
    with pytest.raises(ValueError, match=r"mse_loss: reduction must be one of \('mean', 'sum', 'none'\)"):
        minienc.mse_loss(minienc.zeros(2), minienc.zeros(2), reduction="avg")


# ----- the objectives: every constructor refuses what it cannot train with (issue 28) ---------

def small_vit():
    return nn.VisionTransformer(image_size=8, patch_size=2, in_channels=1, dim=16, depth=1,
                                num_heads=2)


def dino(**kwargs):
    return DINO(nn.Linear(4, 8), dino_head(8, 16, 8, 4, num_layers=2), **kwargs)


def vicreg(**kwargs):
    return VICReg(nn.Linear(4, 8), vicreg_expander(8, 8, 8), **kwargs)


def barlow(**kwargs):
    return BarlowTwins(nn.Linear(4, 8), barlow_projector(8, 8, 8), **kwargs)


def lejepa(**kwargs):
    return LeJEPA(nn.Linear(4, 8), embed_dim=8, **kwargs)


def sampler(**kwargs):
    return MultiBlockMaskSampler(4, **{"min_context": 1, **kwargs})


def ijepa_loss(context, targets):
    model = IJEPA(small_vit(), predictor_dim=8, predictor_depth=1)
    return model.loss(minienc.tensor(np.zeros((2, 1, 8, 8), dtype=np.float32)),
                      masks=(np.zeros(context, dtype=np.int64), np.zeros(targets, dtype=np.int64)))


def dino_head_(**kwargs):
    return dino_head(**{"in_features": 8, "out_features": 16, "hidden_features": 8,
                        "bottleneck_features": 4, "num_layers": 2, **kwargs})


OBJECTIVES = {
    "DINO centre momentum above 1": (lambda: dino(center_momentum=1.5), "DINO", "center_momentum"),
    "DINO centre momentum negative": (lambda: dino(center_momentum=-1), "DINO", "center_momentum"),
    "DINO centre momentum NaN": (lambda: dino(center_momentum=float("nan")), "DINO", "center_momentum"),
    "DINO teacher temperature inf": (lambda: dino(teacher_temperature=float("inf")), "DINO",
                                     "teacher_temperature"),
    "DINO teacher temperature 0": (lambda: dino(teacher_temperature=0.0), "DINO", "teacher_temperature"),
    "DINO student temperature negative": (lambda: dino(student_temperature=-0.1), "DINO",
                                          "student_temperature"),
    "DINO global crops 0": (lambda: dino(global_crops=0), "DINO", "global_crops"),
    "DINO momentum NaN": (lambda: dino(momentum=float("nan")), "DINO", "momentum"),
    "dino_head no prototypes": (lambda: dino_head_(out_features=0), "dino_head", "out_features"),
    "dino_head -2 layers": (lambda: dino_head_(num_layers=-2), "dino_head", "num_layers"),
    "dino_head 0 layers": (lambda: dino_head_(num_layers=0), "dino_head", "num_layers"),
    "dino_head bottleneck 0": (lambda: dino_head_(bottleneck_features=0), "dino_head",
                               "bottleneck_features"),
    "WeightNormLinear 0 prototypes": (lambda: WeightNormLinear(8, 0), "WeightNormLinear", "out_features"),
    "VICReg eps negative": (lambda: vicreg(eps=-1e-4), "VICReg", "eps"),
    "VICReg weight negative": (lambda: vicreg(variance_weight=-25.0), "VICReg", "variance_weight"),
    "VICReg weight NaN": (lambda: vicreg(covariance_weight=float("nan")), "VICReg", "covariance_weight"),
    "VICReg invariance weight inf": (lambda: vicreg(invariance_weight=float("inf")), "VICReg",
                                     "invariance_weight"),
    "BarlowTwins lambd negative": (lambda: barlow(lambd=-5e-3), "BarlowTwins", "lambd"),
    "BarlowTwins lambd NaN": (lambda: barlow(lambd=float("nan")), "BarlowTwins", "lambd"),
    "LeJEPA 0 directions": (lambda: lejepa(num_directions=0), "LeJEPA", "num_directions"),
    "LeJEPA one view": (lambda: lejepa(num_views=1), "LeJEPA", "num_views"),
    "LeJEPA negative local views": (lambda: lejepa(num_local_views=-1), "LeJEPA", "num_local_views"),
    "sampler batch 0": (lambda: sampler()(0), "MultiBlockMaskSampler", "batch_size"),
    "sampler targets 0": (lambda: sampler(num_targets=0), "MultiBlockMaskSampler", "num_targets"),
    "sampler targets float": (lambda: sampler(num_targets=2.5), "MultiBlockMaskSampler", "num_targets"),
    "sampler max_tries 0": (lambda: sampler(max_tries=0), "MultiBlockMaskSampler", "max_tries"),
    "sampler min_context 0": (lambda: sampler(min_context=0), "MultiBlockMaskSampler", "min_context"),
    "sampler cut": (lambda: sampler(cut="middle"), "MultiBlockMaskSampler", "cut"),
    "IJEPA empty context": (lambda: ijepa_loss((2, 0), (2, 1, 2)), "IJEPA", "context_idx"),
    "IJEPA empty target blocks": (lambda: ijepa_loss((2, 3), (2, 1, 0)), "IJEPA", "target_idx"),
    "MaskedViewsJEPA keeps no patch": (lambda: MaskedViewsJEPA(small_vit(), predictor_dim=8, predictor_depth=1,
                                                               keep=0.01), "MaskedViewsJEPA", "keep=0.01"),
    "LeJEPA mask_keep 0": (lambda: LeJEPA(small_vit(), mask_keep=0.0), "LeJEPA", "mask_keep"),
    "LeJEPA mask_keep above 1": (lambda: LeJEPA(small_vit(), mask_keep=1.5), "LeJEPA", "mask_keep"),
    "LeJEPA local_keep 0": (lambda: LeJEPA(small_vit(), mask_keep=0.5, num_local_views=2,
                                           local_keep=0.0), "LeJEPA", "local_keep"),
    "MaskedViewsJEPA lam 2": (lambda: MaskedViewsJEPA(small_vit(), predictor_dim=8, lam=2.0),
                              "MaskedViewsJEPA", "lam"),
    "MaskedViewsJEPA 0 directions": (lambda: MaskedViewsJEPA(small_vit(), predictor_dim=8,
                                                             num_directions=0),
                                     "MaskedViewsJEPA", "num_directions"),
    "IJEPA predictor width 0": (lambda: IJEPA(small_vit(), predictor_dim=0), "JEPAPredictor", "dim"),
    "IJEPA predictor heads 0": (lambda: IJEPA(small_vit(), predictor_heads=0), "JEPAPredictor",
                                "num_heads"),
    "IJEPA predictor depth -1": (lambda: IJEPA(small_vit(), predictor_depth=-1), "JEPAPredictor",
                                 "depth"),
    "IJEPA masks not a sampler": (lambda: IJEPA(small_vit(), masks=4), "IJEPA", "masks"),
}


@pytest.mark.parametrize("case", list(OBJECTIVES))
def test_bad_objective_arguments_are_refused_naming_owner_and_argument(case):
    make, owner, argument = OBJECTIVES[case]
    with pytest.raises(ValueError) as error:
        make()
    message = str(error.value)
    assert message.startswith(f"{owner}") and argument in message, message


def test_lejepa_one_global_view_with_local_views_is_allowed():
    """The guard against a single view counts every view: one global and local ones still have
    an invariance term (the local views predict the global view)."""
    assert lejepa(num_views=1, local_augment=lambda x: x, num_local_views=2).num_views == 1
