"""prefloop: data."""
