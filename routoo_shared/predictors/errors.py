"""Errors of predictor files, apart from the predictor so that the routing runtime can name them
without loading torch."""


class PredictorFileError(ValueError):
    """A saved predictor is missing, corrupt or does not match its configuration."""
