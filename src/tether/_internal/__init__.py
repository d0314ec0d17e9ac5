"""Private helpers shared by Tether's packages. Not part of the public API."""
