"""Placeholder: this capability is not built yet."""
