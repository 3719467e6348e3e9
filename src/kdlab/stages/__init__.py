"""One module per pipeline stage: params.yaml -> validated config -> library calls -> outputs."""
