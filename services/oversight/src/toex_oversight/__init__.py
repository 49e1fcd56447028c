"""toex national oversight: every region's work in figures, from the events alone."""
