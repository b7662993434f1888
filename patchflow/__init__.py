"""patchflow core: configuration, secrets and the content store shared by every layer."""

__version__ = "0.1.0"
