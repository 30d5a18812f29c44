"""Training: the per-stage engine, the epoch loop, the losses and the ``hmh train`` runner."""
