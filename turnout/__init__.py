"""Turnout: blue-green and progressive rollouts of Triton models behind Envoy."""

__version__ = "0.1.0"
