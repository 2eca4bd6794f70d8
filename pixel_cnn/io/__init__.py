"""Files: the stacks, the KOI table and labels, the prepared dataset, Kepler TPFs and ephemerides."""
