"""Upstream workarounds; filled in by the foundation work."""
