"""Performance predictors: prompt encoders, the predictor's network, its training and new models."""
