"""The science core: arrays in, arrays out (numpy, torch, scikit-learn, captum, matplotlib).

Nothing here imports MLflow or reads a file path; the same functions run in prep,
training and inside the served model.
"""
