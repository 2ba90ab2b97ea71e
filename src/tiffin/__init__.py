"""Tiffin: one package shared by the pipeline stages, the service and the batch runner."""

__version__ = "0.1.0"
