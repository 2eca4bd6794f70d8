"""The training side of each branch of a vetter: how a branch is fitted on training targets and
scores others (``pixel``: the Pixel-CNN; ``tabular``: the KOI-table model). What a fitted branch
ships lives in :mod:`pixel_cnn.vetter`."""
