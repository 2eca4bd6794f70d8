"""Stacks as data: building a phase-binned difference stack from a pixel time series
(``phasefold``) and the labelled set of stacks in memory (``dataset``). Arrays in, arrays out."""
