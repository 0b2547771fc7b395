"""The cli layer: argument parsing and the headless commands, no logic of its own."""
