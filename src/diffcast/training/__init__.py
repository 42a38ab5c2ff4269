"""Training on HuggingFace Accelerate, checkpoint io, EMA, optimiser/scheduler factories."""
