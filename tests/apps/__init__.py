"""Small apps that exercise drainspec's handling of bad input: each one breaks in one way."""
