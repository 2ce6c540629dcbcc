"""The doors into decayrec: the CLI, the pipeline steps it shares with DVC, and config."""
