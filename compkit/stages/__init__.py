"""The stages: one module per ``compkit`` subcommand, named as the subcommand. Nothing in the engine imports them."""
