"""Small helpers shared across subpackages (file io, seeding)."""
