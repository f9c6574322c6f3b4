"""Studies: a published (or our own) question answered by the variants of one project folder.

A study folder (``studies/<name>/<scale>/``) is the pipeline with its own params: its data, model
and variants are the study's rows. The ``study`` stage then turns every variant's measurements
into the study's tables, metrics and figures (``results.md`` beside the params).
"""
