"""The `keras-vit` command line: `main` assembles one module per command."""
