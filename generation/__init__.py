"""prefloop: generation."""
