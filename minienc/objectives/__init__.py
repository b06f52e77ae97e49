"""Encoder objectives, one file per family, each opening with the math it implements:
reconstruction (AE, denoising AE, VAE), contrastive (triplet, InfoNCE/SimCLR, MoCo),
masked (MLM, MAE) and jepa (I-JEPA)."""
from .masked import MAE, mae_loss, patch_targets, random_masking  # noqa: F401
