"""Engine layer: clock units, random streams, distributions, statistics and network delays."""
