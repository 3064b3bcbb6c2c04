"""iam-proxy: an identity and access-control reverse proxy."""

__version__ = "0.1.0"
