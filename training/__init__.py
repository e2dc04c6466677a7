"""prefloop: training."""
