"""Enrichment: what the engine adds to stored items (zero-shot tags)."""
