"""Adapters that put diffcast models behind other packages' interfaces (nothing here imports those packages)."""
