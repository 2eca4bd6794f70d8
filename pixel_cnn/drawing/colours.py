"""Colour conventions shared by every figure (vetting sheets, per-fold attribution figures)."""

#: Colour map of every attribution map (per-fold ``attributions.png`` and the vetting sheets): green
#: pushes toward CONFIRMED (positive logit), magenta toward FALSE POSITIVE. Not the red/blue of the
#: difference images, so an attribution map is never read as dimming.
ATTRIBUTION_CMAP = "PiYG"
#: What the attribution colours mean, for titles and colour-bar labels.
ATTRIBUTION_MEANING = "green: toward CONFIRMED, magenta: toward FALSE POSITIVE"
#: Colour map of the difference images: red = dimming (+), blue = brightening.
DIFFERENCE_CMAP = "RdBu_r"
