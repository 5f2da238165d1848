"""Model adapters: each model source (builtin, SavedModel, TF Hub) is one adapter."""
