"""prefloop: app."""
