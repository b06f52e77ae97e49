"""Layers, transformer parts and encoders, built on Module and Parameter."""
from . import init
from .conv import AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d
from .encoders import ConvDecoder, ConvEncoder, MLPEncoder, TextTransformer
from .layers import Dropout, Embedding, Flatten, GELU, Identity, Linear, ReLU, Sigmoid, Tanh, Unflatten
from .module import Module, Parameter, Sequential, functional_call
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm, SyncBatchNorm
from .transformer import MLP, MultiHeadAttention, TransformerBlock, init_transformer_weights
from .vit import (PatchEmbed, VisionTransformer, gather_tokens, get_1d_sincos_pos_embed,
                  get_2d_sincos_pos_embed, patchify, unpatchify)
