"""Encoder objectives, one file per family, each opening with the math it implements, and every
objective speaking one protocol (protocol.py: loss(batch) -> dict, embed, param_groups,
after_step):

    reconstruction   Autoencoder, DenoisingAutoencoder, VAE
    triplet          Triplet (the triplet loss and its miners)
    contrastive      SimCLR (InfoNCE / NT-Xent), MoCo (v2)
    masked_language  MaskedLanguageModel (BERT's MLM)
    masked_image     MAE
    byol             BYOL
    simsiam          SimSiam
    vicreg           VICReg
    barlow           BarlowTwins
    dino             DINO
    jepa             IJEPA (with multiblock's mask sampler) and MaskedViewsJEPA (the default
                     that learns at small scale); the study's variants in jepa_study
    sigreg, lejepa   SIGReg and LeJEPA
"""
from .protocol import Objective, ViewObjective  # noqa: F401
from .masked_image import MAE, mae_loss, patch_targets, random_masking  # noqa: F401
from .masked_language import MaskedLanguageModel, MLMHead, mask_tokens, mlm_loss  # noqa: F401
from .reconstruction import (VAE, Autoencoder, DenoisingAutoencoder, build_model,  # noqa: F401
                             corruption, kl_to_standard_normal, reconstruction_loss, reparameterize)
from .triplet import (Triplet, batch_triplet_loss, mine_batch_all, mine_batch_hard,  # noqa: F401
                      mine_semi_hard, pairwise_distances, triplet_loss, view_triplet_loss)
from .contrastive import MoCo, SimCLR, info_nce, info_nce_logits, nt_xent, projection_head  # noqa: F401
from .byol import BYOL, byol_loss, byol_mlp  # noqa: F401
from .simsiam import SimSiam, simsiam_loss, simsiam_predictor, simsiam_projector  # noqa: F401
from .vicreg import VICReg, variance_covariance, vicreg_expander, vicreg_loss  # noqa: F401
from .barlow import BarlowTwins, barlow_projector, barlow_twins_loss  # noqa: F401
from .dino import DINO, dino_head  # noqa: F401
from .jepa import IJEPA, JEPAPredictor, MaskedViewsJEPA, jepa_loss  # noqa: F401
from .multiblock import MultiBlockMaskSampler, block_size  # noqa: F401
from .sigreg import epps_pulley, random_directions, sigreg  # noqa: F401
from .lejepa import LeJEPA, lejepa_terms  # noqa: F401
