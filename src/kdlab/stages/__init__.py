"""One module per pipeline stage family, each its own entry (``python -m kdlab.stages.<module>``,
as dvc.yaml runs it): params.yaml -> config -> library calls -> outputs."""
