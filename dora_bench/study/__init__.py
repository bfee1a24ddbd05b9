"""Studies: many runs declared in one file, run in priority order and analysed as declared (``dora-bench-study``).

The top of the data flow: a study starts ``dora-bench`` runs (``run/``) and reads their records back
through the report side (``report/``); neither of those imports it."""
