"""Intelligence products assembled from the services."""
