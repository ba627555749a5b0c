"""Package data: the paper's tables (``paper_tables.json``) and a few real sample photos (``images/``)."""
