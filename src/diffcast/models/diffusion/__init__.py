"""Residual diffusion: schedules, the Global Temporal UNet, and the DiffCast wrapper."""
