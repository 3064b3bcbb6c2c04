"""The core every stage may import, and which imports no stage: the normalized `Identity`, errors and
reason codes, header safety, redaction, the expiring cache, trusted networks and watched files."""
