"""What comes out of a finished study: its family of studies, the report, best.toml, reproduction and exports."""
