"""Layers, transformer parts and encoders, built on Module and Parameter."""
from .module import Module, Parameter, Sequential
