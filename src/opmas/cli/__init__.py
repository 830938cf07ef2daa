"""The `opmas` command line (Typer): one module per command group."""
