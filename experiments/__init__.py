"""absl launchers of the metadial experiments (run as ``python -m experiments.NAME``)."""
