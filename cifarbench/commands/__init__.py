"""What the `cifarbench` command and `make demo` run: predict, the demo. Imports every room below it."""
