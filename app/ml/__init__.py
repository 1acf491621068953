"""Machine-learning code the service needs at run time: the feature transformer that trained
pipelines pickle (so it must stay importable from `app`), the model registry, explanations
and prediction monitoring. Training itself lives in the separate `training` package."""
