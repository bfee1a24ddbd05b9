"""The report side: tables, figures and parameter counts, pure functions of the run records."""
