"""One module per file type: pure ``parse_*``/``dump_*`` plus thin ``read_*``/``write_*``."""
