"""Upstream connectors: each turns a source document into normalized patch records (no DB)."""
