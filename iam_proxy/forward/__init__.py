"""Forwarding: strip spoofable headers, add identity headers and a signed assertion, stream upstream."""
