"""``python -m registry_tools``: the command line in registry_tools.cli."""

from registry_tools.cli import cli

if __name__ == "__main__":
    cli(prog_name="python -m registry_tools")
