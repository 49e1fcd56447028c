"""Grant propagation benchmark."""
