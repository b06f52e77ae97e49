"""Layers, transformer parts and encoders, built on Module and Parameter."""
from . import init
from .conv import AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d
from .layers import Dropout, Embedding, Flatten, GELU, Identity, Linear, ReLU, Sigmoid, Tanh, Unflatten
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm
from .module import Module, Parameter, Sequential, functional_call
